//! `tally.v1.Audit`, and how the gRPC edge itself writes to the audit trail
//! (refused calls, rejected submissions; the operations write their own).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, caller_of, within_page_bytes};
use crate::audit::{Action, Event, Outcome};
use crate::coordinator::ops::{Caller, NotAudited, Ops};
use crate::coordinator::storage::audit_log::{AuditLogError, AuditStore};
use crate::proto;
use crate::support::clock::Clock;
use tally_wire::audit::record_to_proto;

/// The outcome a request's result is recorded with.
fn outcome_of<T>(result: &Result<T, Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(s) => Outcome::refused(s.code() as u32, s.message()),
    }
}

/// Appends one record off the async runtime (the append flushes to disk).
pub(crate) async fn append(log: &Arc<dyn AuditStore>, event: Event) -> Result<(), AuditLogError> {
    let log = log.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| log.append(event))).await {
        Ok(r) => r.map(drop),
        Err(e) => Err(AuditLogError::Task(e.to_string())),
    }
}

/// Records `action` by `caller`, at `clock`'s time, with the outcome of
/// `result`, durably, and then passes `result` on. If the record cannot be
/// written, a refusal is passed on unchanged (and the failure logged); a
/// success becomes `INTERNAL` ([`NotAudited`]), saying the action was done
/// but not audited.
pub(crate) async fn audited<T>(
    log: &Arc<dyn AuditStore>,
    clock: &Clock,
    caller: Caller,
    action: Action,
    result: Result<T, Status>,
) -> Result<T, Status> {
    let described = action.to_string();
    let event = caller.event(clock.now_unix_ms(), action, outcome_of(&result));
    match append(log, event).await {
        Ok(()) => result,
        Err(e) => {
            tracing::error!(error = %e, action = %described, "writing the audit trail failed");
            match result {
                Ok(_) => Err(NotAudited {
                    action: described,
                    source: e,
                }
                .into()),
                Err(status) => Err(status),
            }
        }
    }
}

pub(crate) struct AuditService {
    ops: Arc<Ops>,
}

impl AuditService {
    pub fn new(ops: Arc<Ops>) -> AuditService {
        AuditService { ops }
    }
}

#[tonic::async_trait]
impl proto::audit_server::Audit for AuditService {
    async fn list_audit_records(
        &self,
        request: Request<proto::ListAuditRecordsRequest>,
    ) -> Result<Response<proto::ListAuditRecordsResponse>, Status> {
        let caller = caller_of(&request);
        let req = request.into_inner();
        let ops = self.ops.clone();
        let page = blocking(move || {
            Ok(ops.list_audit_records(&caller, req.from_sequence, req.limit as usize)?)
        })
        .await?;
        let (records, _) = within_page_bytes(page.records.iter().map(record_to_proto));
        Ok(Response::new(proto::ListAuditRecordsResponse {
            records,
            last_sequence: page.last_sequence,
        }))
    }
}
