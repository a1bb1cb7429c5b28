//! The coordinator's status (auditor).

use std::collections::BTreeMap;

use super::{Caller, Ops, OpsError};
use crate::access::Operation;
use crate::overview::{CoordinatorStatus, LatestSnapshot, MemberStatus};
use crate::reconcile::AlertKind;
use crate::state::StateCode;

impl Ops {
    /// Every member state's newest accepted snapshot, and the current
    /// alerts by kind (auditor).
    pub fn get_status(&self, caller: &Caller) -> Result<CoordinatorStatus, OpsError> {
        self.permit(caller, Operation::GetStatus)?;
        let current = self.alerts().current_alerts()?;
        let mut current_alerts: BTreeMap<AlertKind, u64> =
            AlertKind::ALL.iter().map(|k| (*k, 0)).collect();
        let mut overdue: Vec<StateCode> = Vec::new();
        for a in &current {
            *current_alerts.entry(a.key.kind).or_default() += 1;
            if a.key.kind == AlertKind::SnapshotOverdue
                && let Some(s) = a.key.state
            {
                overdue.push(s);
            }
        }
        let mut states: Vec<StateCode> = self.ingestor.members().copied().collect();
        states.sort();
        let mut members = Vec::with_capacity(states.len());
        for state in states {
            let latest = self.ingestor.store().latest(state)?;
            members.push(MemberStatus {
                state,
                latest: latest.map(|l| LatestSnapshot {
                    sequence: l.signed.header.sequence,
                    as_of_unix_ms: l.signed.header.as_of_unix_ms,
                    accepted_at_unix_ms: l.receipt.accepted_at_unix_ms,
                }),
                overdue: overdue.contains(&state),
            });
        }
        Ok(CoordinatorStatus {
            members,
            current_alerts,
            last_cursor: self.alerts().last_cursor(),
        })
    }
}
