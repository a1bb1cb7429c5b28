//! Alerts as the domain sees them: one occurrence of a discrepancy, where it
//! stands, and every change to it as an event with a cursor.
//!
//! Identity: at most one *current* alert per [`AlertKey`]. When a condition
//! clears, its alert stays (status `cleared`) and stops being current; if the
//! condition returns, a new alert is opened that links to the old one.
//! Storage of alerts lives with the coordinator; this module has no I/O.

use serde::{Deserialize, Serialize};

use crate::reconcile::{AlertBody, AlertKey, SnapshotRef};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds and nobody has acted on it.
    Open,
    /// The condition holds; an operator has seen it.
    Acknowledged,
    /// An operator closed it with a reason.
    Resolved,
    /// A later snapshot (or the clock) removed the cause.
    Cleared,
}

/// One entry of an alert's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub cursor: u64,
    pub at_unix_ms: i64,
    pub action: EventKind,
    /// The snapshot that caused the change, if one did.
    pub by: Option<SnapshotRef>,
    pub note: String,
    /// For `resolved`: the operator's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResolutionReason>,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    Updated,
    Cleared,
    Acknowledged,
    Resolved,
    Reopened,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Updated => "updated",
            EventKind::Cleared => "cleared",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Resolved => "resolved",
            EventKind::Reopened => "reopened",
        }
    }
}

/// Why an operator closed an alert: a fixed list, so reports can count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionReason {
    FalsePositive,
    DataEntryError,
    Located,
    TransferConfirmed,
    WrittenOff,
    ReferredForInvestigation,
}

impl ResolutionReason {
    pub const ALL: [ResolutionReason; 6] = [
        ResolutionReason::FalsePositive,
        ResolutionReason::DataEntryError,
        ResolutionReason::Located,
        ResolutionReason::TransferConfirmed,
        ResolutionReason::WrittenOff,
        ResolutionReason::ReferredForInvestigation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionReason::FalsePositive => "false_positive",
            ResolutionReason::DataEntryError => "data_entry_error",
            ResolutionReason::Located => "located",
            ResolutionReason::TransferConfirmed => "transfer_confirmed",
            ResolutionReason::WrittenOff => "written_off",
            ResolutionReason::ReferredForInvestigation => "referred_for_investigation",
        }
    }
}

impl std::str::FromStr for ResolutionReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResolutionReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = ResolutionReason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown reason '{s}' (expected one of {})",
                    valid.join(", ")
                )
            })
    }
}

/// Longest note an operator may attach to an action, in UTF-8 bytes. A note
/// stays in the alert's history for good, and every read of the alert
/// carries it: unbounded notes would make alerts too big to read.
pub const MAX_NOTE_BYTES: usize = 1024;

/// A stored alert: one occurrence of a condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub key: AlertKey,
    pub status: AlertStatus,
    pub body: AlertBody,
    pub opened_at_unix_ms: i64,
    pub updated_at_unix_ms: i64,
    /// The earlier occurrence of the same condition, if it had cleared before.
    pub previous_occurrence: Option<u64>,
    pub history: Vec<HistoryEntry>,
}

/// One change, as stored in the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub cursor: u64,
    pub alert_id: u64,
    pub kind: EventKind,
    pub at_unix_ms: i64,
    pub key: AlertKey,
    pub status: AlertStatus,
}
