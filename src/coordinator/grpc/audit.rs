//! `tally.v1.Audit`, and how the other services write to the audit trail.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::EdgeFailure;
use super::{blocking, within_page_bytes};
use crate::access::Principal;
use crate::audit::{Action, Actor, Event, Outcome, SealedRecord};
use crate::coordinator::storage::audit_log::{AuditLogError, AuditStore};
use crate::proto;
use crate::support::clock::Clock;

/// Default and largest page of `ListAuditRecords`.
const PAGE_MAX: usize = 1000;

/// Who made a request and from where, taken before the request is consumed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: Actor,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    pub fn of<T>(request: &Request<T>) -> Caller {
        Caller {
            actor: Actor::of(request.extensions().get::<Principal>()),
            peer: request.remote_addr(),
        }
    }

    fn event(self, at_unix_ms: i64, action: Action, outcome: Outcome) -> Event {
        Event {
            at_unix_ms,
            actor: self.actor,
            peer: self.peer.map(|p| p.to_string()),
            action,
            outcome,
        }
    }
}

/// The outcome a request's result is recorded with.
pub(crate) fn outcome_of<T>(result: &Result<T, Status>) -> Outcome {
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

/// Records `action` by `caller`, at `clock`'s time, with the outcome of `result`, durably, and
/// then passes `result` on. If the record cannot be written, a refusal is
/// passed on unchanged (and the failure logged); a success becomes
/// `INTERNAL`, saying the action was done but not audited.
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
                Ok(_) => Err(EdgeFailure::NotAudited {
                    action: described,
                    source: e,
                }
                .into()),
                Err(status) => Err(status),
            }
        }
    }
}

/// The wire form of a stored record.
pub(crate) fn record_to_proto(r: &SealedRecord) -> proto::AuditRecord {
    let mut out = proto::AuditRecord {
        sequence: r.sequence,
        encoding: r.encoding.clone().into(),
        hash: r.hash.clone().into(),
        signature: r.signature.clone().into(),
        ..Default::default()
    };
    if let Ok(d) = r.decode() {
        let e = d.event;
        out.at_unix_ms = e.at_unix_ms;
        out.actor = e.actor.to_string();
        out.peer = e.peer.unwrap_or_default();
        out.action = e.action.kind().to_string();
        out.description = e.action.to_string();
        out.outcome = e.outcome.code_name().to_string();
        if let Outcome::Refused { reason, .. } = e.outcome {
            out.reason = reason;
        }
    }
    out
}

/// The stored form of a record received over the wire (for verification).
pub fn record_from_proto(r: &proto::AuditRecord) -> SealedRecord {
    SealedRecord {
        sequence: r.sequence,
        encoding: r.encoding.to_vec(),
        hash: r.hash.to_vec(),
        signature: r.signature.to_vec(),
    }
}

pub(crate) struct AuditService {
    log: Arc<dyn AuditStore>,
}

impl AuditService {
    pub fn new(log: Arc<dyn AuditStore>) -> AuditService {
        AuditService { log }
    }
}

#[tonic::async_trait]
impl proto::audit_server::Audit for AuditService {
    async fn list_audit_records(
        &self,
        request: Request<proto::ListAuditRecordsRequest>,
    ) -> Result<Response<proto::ListAuditRecordsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit as usize {
            0 => PAGE_MAX,
            n => n.min(PAGE_MAX),
        };
        let log = self.log.clone();
        let (records, last_sequence) = blocking(move || {
            let records = log.list(req.from_sequence.max(1), limit)?;
            Ok((records, log.last_sequence()))
        })
        .await?;
        let (records, _) = within_page_bytes(records.iter().map(record_to_proto));
        Ok(Response::new(proto::ListAuditRecordsResponse {
            records,
            last_sequence,
        }))
    }
}
