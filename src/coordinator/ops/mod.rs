//! The operations: one transport-free function per operator operation. Each
//! takes the caller (its [`Principal`] and address), checks the one
//! permission table (`tally_core::access`, through [`AccessPolicy::permit`]),
//! does the work, writes the one audit record, and returns a domain value or
//! an [`OpsError`]. The gRPC services decode, call one of these and encode;
//! a browser console will call the same functions.
//!
//! The functions block (storage, the audit append's flush): call them off
//! the async runtime. A refusal by the permission table is recorded as the
//! access layer records every refused call (`Action::Call` with the RPC's
//! path), so the trail reads the same whichever of the two refused it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access::{AccessError, AccessPolicy, Operation, Principal};
use crate::audit::{Action, Actor, Event, Outcome};
use crate::coordinator::grpc::request::RequestError;
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::alerts::{ActionError, Alert, AlertStoreError, ResolutionReason};
use crate::coordinator::storage::audit_log::{AuditLogError, AuditStore};
use crate::coordinator::storage::seizures::SeizureLogError;
use crate::reconcile::{AlertKey, AlertKind, Custody, Seizure};
use crate::serial::{CanonicalRule, ItemKey};
use crate::support::clock::Clock;

mod seizures;

pub use seizures::{RawSeizure, SeizureMatch, SeizureReceipt};

/// The operations whose permission is decided here rather than by a
/// transport's own layer (which then only authenticates the caller).
pub(crate) const DECIDED: &[Operation] = &[
    Operation::AcknowledgeAlert,
    Operation::ResolveAlert,
    Operation::ReopenAlert,
    Operation::ReportSeizures,
];

/// Who asks, and from where: what an audit record names.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None`: nobody was authenticated (and nothing is checked).
    pub principal: Option<Principal>,
    pub peer: Option<SocketAddr>,
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
    /// The action took effect, but its audit record could not be written.
    #[error(
        "{action}: done, but the audit trail could not be written ({source}); \
         tell the coordinator's administrator"
    )]
    NotAudited {
        action: String,
        source: AuditLogError,
    },
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

/// What the operations work on.
#[derive(Clone)]
pub(crate) struct Ops {
    policy: Arc<AccessPolicy>,
    reconciler: Arc<Reconciler>,
    audit: Arc<dyn AuditStore>,
    clock: Clock,
    rule: CanonicalRule,
}

impl Ops {
    pub fn new(
        policy: Arc<AccessPolicy>,
        reconciler: Arc<Reconciler>,
        audit: Arc<dyn AuditStore>,
        clock: Clock,
        rule: CanonicalRule,
    ) -> Ops {
        Ops {
            policy,
            reconciler,
            audit,
            clock,
            rule,
        }
    }

    /// Checks `operation` for `caller` against the permission table; a
    /// refusal is recorded (as a refused call of the operation's RPC).
    fn permit(&self, caller: &Caller, operation: Operation) -> Result<(), OpsError> {
        let Some(principal) = &caller.principal else {
            return Ok(());
        };
        match self.policy.permit(principal, operation) {
            Ok(()) => Ok(()),
            Err(refused) => {
                let refused = OpsError::from(refused);
                tracing::warn!(rpc = operation.rpc(), reason = %refused, "request refused");
                let event = self.event(
                    caller,
                    Action::call(operation.rpc()),
                    outcome_of::<()>(&Err(&refused)),
                );
                if let Err(e) = self.audit.append(event) {
                    tracing::error!(error = %e, "writing the audit trail failed");
                }
                Err(refused)
            }
        }
    }

    fn event(&self, caller: &Caller, action: Action, outcome: Outcome) -> Event {
        Event {
            at_unix_ms: self.clock.now_unix_ms(),
            actor: Actor::of(caller.principal.as_ref()),
            peer: caller.peer.map(|p| p.to_string()),
            action,
            outcome,
        }
    }

    /// Records `action` by `caller` with the outcome of `result`, durably,
    /// and then passes `result` on. If the record cannot be written, a
    /// refusal is passed on unchanged (and the failure logged); a success
    /// becomes [`OpsError::NotAudited`].
    fn audited<T>(
        &self,
        caller: &Caller,
        action: Action,
        result: Result<T, OpsError>,
    ) -> Result<T, OpsError> {
        let described = action.to_string();
        let event = self.event(caller, action, outcome_of(&result.as_ref()));
        match self.audit.append(event) {
            Ok(_) => result,
            Err(e) => {
                tracing::error!(error = %e, action = %described, "writing the audit trail failed");
                match result {
                    Ok(_) => Err(OpsError::NotAudited {
                        action: described,
                        source: e,
                    }),
                    Err(refused) => Err(refused),
                }
            }
        }
    }

    /// Acknowledges alert `id` (operator).
    pub fn acknowledge_alert(
        &self,
        caller: &Caller,
        id: u64,
        note: &str,
    ) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::AcknowledgeAlert)?;
        let now = self.clock.now_unix_ms();
        let result = self
            .reconciler
            .alerts()
            .acknowledge(id, note, now)
            .map_err(OpsError::from);
        self.audited(caller, Action::AcknowledgeAlert { alert_id: id }, result)
    }

    /// Resolves alert `id` for `reason` (operator). `reason` is what the
    /// caller's request decoded to: a refusal of it is recorded too.
    pub fn resolve_alert(
        &self,
        caller: &Caller,
        id: u64,
        reason: Result<ResolutionReason, RequestError>,
        note: &str,
    ) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::ResolveAlert)?;
        let action = Action::ResolveAlert {
            alert_id: id,
            reason: reason.as_ref().map_or("", |r| r.as_str()).to_string(),
        };
        let result = match reason {
            Ok(reason) => self
                .reconciler
                .alerts()
                .resolve(id, reason, note, self.clock.now_unix_ms())
                .map_err(OpsError::from),
            Err(refused) => Err(refused.into()),
        };
        self.audited(caller, action, result)
    }

    /// Reopens alert `id` (operator).
    pub fn reopen_alert(&self, caller: &Caller, id: u64, note: &str) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::ReopenAlert)?;
        let now = self.clock.now_unix_ms();
        let result = self
            .reconciler
            .alerts()
            .reopen(id, note, now)
            .map_err(OpsError::from);
        self.audited(caller, Action::ReopenAlert { alert_id: id }, result)
    }

    /// Records a seizure report and matches its items with their alerts and
    /// custody (operator).
    pub fn report_seizures(
        &self,
        caller: &Caller,
        items: &[RawSeizure],
    ) -> Result<SeizureReceipt, OpsError> {
        self.permit(caller, Operation::ReportSeizures)?;
        let (report_id, result) = self.report(items);
        let action = Action::ReportSeizures {
            items: items.len() as u64,
            report_id,
        };
        self.audited(caller, action, result)
    }

    /// Each seized item's alert and custody, as they stand now.
    fn match_seizures(&self, items: &[Seizure]) -> Result<Vec<SeizureMatch>, ReconcileError> {
        let mut matches = Vec::with_capacity(items.len());
        for item in items {
            let key = AlertKey {
                kind: AlertKind::SeizedItem,
                item: Some(item.key.clone()),
                state: None,
                counterparty: None,
                sequence: None,
            };
            let alert = self.reconciler.alerts().current(&key)?;
            let custody: Custody = self.reconciler.with_engine(|e| e.custody(&item.key))?;
            matches.push(SeizureMatch {
                key: ItemKey::clone(&item.key),
                alert_id: alert.map(|a| a.id),
                custody,
            });
        }
        Ok(matches)
    }
}

/// The outcome a result is recorded with: its error's gRPC status code and
/// message.
fn outcome_of<T>(result: &Result<T, &OpsError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::refused(
            crate::coordinator::grpc::status::ops_code(e) as u32,
            &e.to_string(),
        ),
    }
}
