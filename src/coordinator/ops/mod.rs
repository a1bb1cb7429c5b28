//! The operations: one transport-free function per operator operation. Each
//! takes the caller (its [`Principal`] and address), checks the one
//! permission table (`tally_core::access`, through [`AccessPolicy::permit`]),
//! then looks at its request, does the work, and returns a domain value or
//! an [`OpsError`]; an action (acknowledge, resolve, reopen, report
//! seizures) also writes its one audit record, whatever its outcome. The
//! gRPC services decode, call one of these and encode; a browser console
//! will call the same functions.
//!
//! The permission comes first: a caller who may not call an operation
//! learns that, not what is wrong with the request (PERMISSION_DENIED before
//! INVALID_ARGUMENT, docs/protocol.md §6). So an operation takes its request
//! as the transport decoded it, [`Decoded`], and looks at a refusal of it
//! only once the caller is allowed. A caller without a principal (nobody
//! authenticated it) is refused as a call without credentials.
//!
//! The functions block (storage, the audit append's flush): call them off
//! the async runtime. A refusal by the permission table is recorded as the
//! access layer records every refused call (`Action::Call` with the RPC's
//! path), so the trail reads the same whichever of the two refused it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::{AccessError, AccessPolicy, Operation, Principal};
use crate::audit::{Action, Actor, Event, Outcome};
use crate::coordinator::admission::Ingestor;
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::metrics::Metrics;
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::StoreError;
use crate::coordinator::storage::alerts::{ActionError, AlertStore, AlertStoreError};
use crate::coordinator::storage::audit_log::{AuditLogError, AuditStore};
use crate::coordinator::storage::seizures::SeizureLogError;
use crate::coordinator::trace::{TraceError, Tracer};
use crate::serial::CanonicalRule;
use crate::support::clock::Clock;

mod alerts;
mod audit;
mod overview;
pub(crate) mod request;
mod seizures;
mod trace;

pub(crate) use alerts::{AlertFilter, AlertQuery, page_token, parse_page_token};
pub(crate) use request::{Decoded, RequestError, item_key};

/// The operations whose permission is decided here rather than by a
/// transport's own layer (which then only authenticates the caller): every
/// operation with a function here.
pub(crate) const DECIDED: &[Operation] = &[
    Operation::ListAlerts,
    Operation::GetAlert,
    Operation::WatchAlerts,
    Operation::AcknowledgeAlert,
    Operation::ResolveAlert,
    Operation::ReopenAlert,
    Operation::ReportSeizures,
    Operation::ListSeizureReports,
    Operation::GetStatus,
    Operation::TraceItem,
    Operation::ListAuditRecords,
];

/// Who asks, and from where: what an audit record names.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Who the transport authenticated; `None`: nobody, and every
    /// operation refuses the call.
    pub principal: Option<Principal>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The audit record of `action` by this caller at `at_unix_ms`.
    pub(crate) fn event(&self, at_unix_ms: i64, action: Action, outcome: Outcome) -> Event {
        Event {
            at_unix_ms,
            actor: Actor::of(self.principal.as_ref()),
            peer: self.peer.map(|p| p.to_string()),
            action,
            outcome,
        }
    }
}

/// An action took effect, but its audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "{action}: done, but the audit trail could not be written ({source}); \
     tell the coordinator's administrator"
)]
pub(crate) struct NotAudited {
    /// The action, described as its record would have.
    pub action: String,
    pub source: AuditLogError,
}

/// Why an operation was refused or failed. Its gRPC status code is given in
/// `grpc::status` (and is what the audit record's outcome carries).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpsError {
    /// The permission table refused the caller.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The request itself is refused (a field, an unknown reason, ...).
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error(transparent)]
    Seizures(#[from] SeizureLogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Audit(#[from] AuditLogError),
    #[error(transparent)]
    NotAudited(#[from] NotAudited),
    /// A seizure report was stored, but matching its items failed after.
    #[error(
        "seizure report {report_id} is recorded, but matching its items failed ({source}); \
         ListSeizureReports shows it"
    )]
    SeizuresUnmatched {
        report_id: u64,
        source: ReconcileError,
    },
}

/// The status code an error is recorded with in the audit trail: the one
/// its caller is answered with. The trail records gRPC's codes whichever
/// transport asked; `grpc::status::ops_code` is the table.
pub(crate) type CodeOf = fn(&OpsError) -> u32;

/// What the operations work on.
pub(crate) struct Deps {
    pub policy: Arc<AccessPolicy>,
    pub ingestor: Ingestor,
    pub reconciler: Arc<Reconciler>,
    pub audit: Arc<dyn AuditStore>,
    /// Watches end when the coordinator starts draining.
    pub lifecycle: Lifecycle,
    /// Connected watchers are counted here.
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// The canonical rule, for requests that name items.
    pub rule: CanonicalRule,
    pub code_of: CodeOf,
}

/// The operations, on what they work on.
pub(crate) struct Ops {
    policy: Arc<AccessPolicy>,
    ingestor: Ingestor,
    reconciler: Arc<Reconciler>,
    tracer: Tracer,
    audit: Arc<dyn AuditStore>,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    clock: Clock,
    rule: CanonicalRule,
    code_of: CodeOf,
}

impl Ops {
    pub fn new(deps: Deps) -> Ops {
        Ops {
            policy: deps.policy,
            ingestor: deps.ingestor,
            tracer: Tracer::new(deps.reconciler.clone()),
            reconciler: deps.reconciler,
            audit: deps.audit,
            lifecycle: deps.lifecycle,
            metrics: deps.metrics,
            clock: deps.clock,
            rule: deps.rule,
            code_of: deps.code_of,
        }
    }

    /// The canonical rule requests that name items are decoded with.
    pub fn rule(&self) -> &CanonicalRule {
        &self.rule
    }

    fn alerts(&self) -> &Arc<AlertStore> {
        self.reconciler.alerts()
    }

    /// Checks `operation` for `caller` against the permission table; a
    /// refusal is recorded (as a refused call of the operation's RPC).
    fn permit(&self, caller: &Caller, operation: Operation) -> Result<(), OpsError> {
        let decision = match &caller.principal {
            Some(principal) => self.policy.permit(principal, operation),
            None => Err(AccessError::NoCredentials {
                rpc: operation.rpc().trim_start_matches('/').to_string(),
            }),
        };
        match decision {
            Ok(()) => Ok(()),
            Err(refused) => {
                let refused = OpsError::from(refused);
                tracing::warn!(rpc = operation.rpc(), reason = %refused, "request refused");
                let event = caller.event(
                    self.clock.now_unix_ms(),
                    Action::call(operation.rpc()),
                    self.outcome_of::<()>(&Err(&refused)),
                );
                if let Err(e) = self.audit.append(event) {
                    tracing::error!(error = %e, "writing the audit trail failed");
                }
                Err(refused)
            }
        }
    }

    /// Records `action` by `caller` with the outcome of `result`, durably,
    /// and then passes `result` on. If the record cannot be written, a
    /// refusal is passed on unchanged (and the failure logged); a success
    /// becomes [`NotAudited`].
    fn audited<T>(
        &self,
        caller: &Caller,
        action: Action,
        result: Result<T, OpsError>,
    ) -> Result<T, OpsError> {
        let described = action.to_string();
        let outcome = self.outcome_of(&result.as_ref());
        let event = caller.event(self.clock.now_unix_ms(), action, outcome);
        match self.audit.append(event) {
            Ok(_) => result,
            Err(e) => {
                tracing::error!(error = %e, action = %described, "writing the audit trail failed");
                match result {
                    Ok(_) => Err(NotAudited {
                        action: described,
                        source: e,
                    }
                    .into()),
                    Err(refused) => Err(refused),
                }
            }
        }
    }

    /// The outcome a result is recorded with: its error's status code and
    /// message.
    fn outcome_of<T>(&self, result: &Result<T, &OpsError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::refused((self.code_of)(e), &e.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
