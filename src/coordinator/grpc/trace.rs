//! `tally.v1.Trace`: the custody trail of one item, with evidence. The RPC
//! decodes its request, calls `Ops::trace_item` and encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking_as, caller_of};
use crate::coordinator::ops::{Ops, item_key};
use crate::proto;
use tally_wire::trace::trail_to_proto;

pub(crate) struct TraceService {
    ops: Arc<Ops>,
}

impl TraceService {
    pub fn new(ops: Arc<Ops>) -> TraceService {
        TraceService { ops }
    }
}

#[tonic::async_trait]
impl proto::trace_server::Trace for TraceService {
    async fn trace_item(
        &self,
        request: Request<proto::TraceItemRequest>,
    ) -> Result<Response<proto::TraceItemResponse>, Status> {
        let caller = caller_of(&request);
        let req = request.get_ref();
        // The request's item key, canonicalised with the coordinator's rule.
        let key = item_key(&req.model, &req.serial, self.ops.rule());
        if let Ok(key) = &key {
            let span = tracing::Span::current();
            span.record("model", key.model.as_str());
            span.record("serial", key.serial.as_str());
        }
        let ops = self.ops.clone();
        let trail = blocking_as("trace task", move || Ok(ops.trace_item(&caller, key)?)).await?;
        Ok(Response::new(trail_to_proto(&trail)))
    }
}
