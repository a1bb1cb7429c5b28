//! Seizure reports, as an operator enters them and as the coordinator keeps
//! and answers them. The checked item the engine reads is
//! [`crate::reconcile::Seizure`].

use serde::{Deserialize, Serialize};

use crate::reconcile::{Custody, Seizure};
use crate::serial::ItemKey;

/// One seized item as reported, not yet checked (its fields may be too long,
/// its time unset, its model or serial without a canonical form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSeizure {
    pub model: String,
    pub serial: String,
    pub seized_at_unix_ms: i64,
    pub place: String,
    pub note: String,
}

/// One stored report: the items an operator entered together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeizureReport {
    pub id: u64,
    pub reported_at_unix_ms: i64,
    pub items: Vec<Seizure>,
}

/// One seized item's alert (if one is open for it) and custody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeizureMatch {
    pub key: ItemKey,
    pub alert_id: Option<u64>,
    pub custody: Custody,
}

/// A stored report: its id and each item's alert and custody, in the order
/// the items were reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeizureReceipt {
    pub report_id: u64,
    pub matches: Vec<SeizureMatch>,
}
