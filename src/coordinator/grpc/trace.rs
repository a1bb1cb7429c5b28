//! `tally.v1.Trace`: the custody trail of one item, with evidence.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::check_field_len;
use super::request::RequestError;
use super::status::EdgeFailure;
use crate::coordinator::trace::{Tracer, Trail, TrailEntry};
use crate::proto;
use crate::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};
use tally_wire::alerts::{alert_status_to_proto, custody_to_proto};
use tally_wire::convert::text_or_empty;

pub(crate) struct TraceService {
    tracer: Arc<Tracer>,
    rule: CanonicalRule,
}

impl TraceService {
    pub fn new(tracer: Arc<Tracer>, rule: CanonicalRule) -> TraceService {
        TraceService { tracer, rule }
    }
}

/// The request's item key, canonicalised with the coordinator's rule.
fn decode(req: &proto::TraceItemRequest, rule: &CanonicalRule) -> Result<ItemKey, RequestError> {
    for (field, value) in [("model", &req.model), ("serial", &req.serial)] {
        check_field_len(field, value)?;
    }
    let model = CanonicalModel::from_raw(&req.model, rule).map_err(|error| {
        RequestError::KeyNotCanonical {
            field: "model",
            value: req.model.clone(),
            error,
        }
    })?;
    let serial = CanonicalSerial::from_raw(&req.serial, rule).map_err(|error| {
        RequestError::KeyNotCanonical {
            field: "serial",
            value: req.serial.clone(),
            error,
        }
    })?;
    Ok(ItemKey { model, serial })
}

fn entry_to_proto(e: &TrailEntry) -> proto::TraceEntry {
    let h = &e.signed.header;
    proto::TraceEntry {
        state: h.state.to_string(),
        sequence: h.sequence,
        as_of_unix_ms: h.as_of_unix_ms,
        status: e.line.status.to_string(),
        site: e.line.site.clone(),
        counterparty: text_or_empty(e.line.counterparty),
        model: e.line.model.clone(),
        serial: e.line.serial.clone(),
        evidence: Some(proto::ItemEvidence {
            header: h.encode().to_vec().into(),
            signature: e.signed.signature.to_bytes().to_vec().into(),
            leaf: e.leaf.clone().into(),
            leaf_index: e.proof.leaf_index,
            tree_size: e.proof.tree_size,
            proof: e.proof.path.iter().map(|p| p.to_vec().into()).collect(),
        }),
    }
}

fn encode(trail: &Trail) -> proto::TraceItemResponse {
    proto::TraceItemResponse {
        model: trail.key.model.to_string(),
        serial: trail.key.serial.to_string(),
        entries: trail.entries.iter().map(entry_to_proto).collect(),
        alerts: trail
            .alerts
            .iter()
            .map(|a| proto::TraceAlert {
                id: a.id,
                kind: a.key.kind.to_string(),
                status: alert_status_to_proto(a.status) as i32,
                state: text_or_empty(a.key.state),
                counterparty: text_or_empty(a.key.counterparty),
                summary: a.body.summary.clone(),
            })
            .collect(),
        custody: Some(custody_to_proto(&trail.custody)),
    }
}

#[tonic::async_trait]
impl proto::trace_server::Trace for TraceService {
    async fn trace_item(
        &self,
        request: Request<proto::TraceItemRequest>,
    ) -> Result<Response<proto::TraceItemResponse>, Status> {
        let key = decode(request.get_ref(), &self.rule)?;
        let span = tracing::Span::current();
        span.record("model", key.model.as_str());
        span.record("serial", key.serial.as_str());
        let tracer = self.tracer.clone();
        let trail = tokio::task::spawn_blocking(move || span.in_scope(|| tracer.trace(&key)))
            .await
            .map_err(|source| EdgeFailure::Task {
                what: "trace task",
                source,
            })??;
        Ok(Response::new(encode(&trail)))
    }
}
