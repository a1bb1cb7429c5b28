//! What the coordinator holds, at a glance: each member state's newest
//! accepted snapshot and the current alerts by kind (`GetStatus`, `tally
//! status`).

use std::collections::BTreeMap;

use crate::reconcile::AlertKind;
use crate::state::StateCode;

/// The coordinator's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorStatus {
    /// Every member state, in code order.
    pub members: Vec<MemberStatus>,
    /// Alerts whose condition currently holds (open, acknowledged, or
    /// resolved while it still holds), by kind: every kind, zero included.
    pub current_alerts: BTreeMap<AlertKind, u64>,
    /// The newest alert event's cursor (0 if none).
    pub last_cursor: u64,
}

/// One member state's newest accepted snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub state: StateCode,
    /// `None` until the state's first snapshot is accepted.
    pub latest: Option<LatestSnapshot>,
    /// A snapshot-overdue alert about the state is current.
    pub overdue: bool,
}

/// The newest accepted snapshot of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestSnapshot {
    pub sequence: u64,
    pub as_of_unix_ms: i64,
    pub accepted_at_unix_ms: i64,
}
