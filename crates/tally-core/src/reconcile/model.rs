//! The engine's inputs and outputs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::item::Status;
use crate::serial::ItemKey;
use crate::snapshot::SnapshotDigest;
use crate::state::StateCode;

/// Which accepted snapshot a fact comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub state: StateCode,
    pub sequence: u64,
    pub digest: SnapshotDigest,
    pub as_of_unix_ms: i64,
}

/// One item row as a state reported it: evidence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Line {
    pub model: String,
    pub serial: String,
    pub status: Status,
    pub site: String,
    pub counterparty: Option<StateCode>,
}

/// One item of a snapshot as the engine reads it (borrowed from a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemView<'a> {
    pub canonical_model: &'a str,
    pub canonical_serial: &'a str,
    pub model: &'a str,
    pub serial: &'a str,
    pub status: Status,
    pub site: &'a str,
    pub counterparty: Option<StateCode>,
}

impl ItemView<'_> {
    pub fn line(&self) -> Line {
        Line {
            model: self.model.to_string(),
            serial: self.serial.to_string(),
            status: self.status,
            site: self.site.to_string(),
            counterparty: self.counterparty,
        }
    }
}

impl<'a> From<crate::snapshot::LeafRef<'a>> for ItemView<'a> {
    fn from(l: crate::snapshot::LeafRef<'a>) -> Self {
        ItemView {
            canonical_model: l.canonical_model,
            canonical_serial: l.canonical_serial,
            model: l.model,
            serial: l.serial,
            status: l.status,
            site: l.site,
            counterparty: l.counterparty,
        }
    }
}

/// Declares [`AlertKind`] from one list of variants and wire names, so that
/// [`AlertKind::ALL`] and [`AlertKind::as_str`] cannot leave a kind out: a
/// kind added to the list is in both, and one added anywhere else does not
/// compile.
macro_rules! alert_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The kinds of discrepancy (docs/alerts.md).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum AlertKind {
            $($(#[$doc])* $variant,)+
        }

        impl AlertKind {
            /// Every kind, in declaration order.
            pub const ALL: [AlertKind; [$($name),+].len()] = [$(AlertKind::$variant),+];

            /// The kind's name on the wire, in configuration and in JSON
            /// (equal to its serde name; a unit test checks).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AlertKind::$variant => $name,)+
                }
            }
        }
    };
}

alert_kinds! {
    DuplicateInSnapshot => "duplicate_in_snapshot",
    HeldBySeveralStates => "held_by_several_states",
    UnaccountedDisappearance => "unaccounted_disappearance",
    UndeclaredTransfer => "undeclared_transfer",
    TransferNotReceived => "transfer_not_received",
    DisposedItemReappears => "disposed_item_reappears",
    ReportedLost => "reported_lost",
    SeizedItem => "seized_item",
    ConflictingSubmission => "conflicting_submission",
    SnapshotOverdue => "snapshot_overdue",
}

impl AlertKind {
    /// How urgent the kind is, before any evidence is weighed.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::SeizedItem
            | AlertKind::DisposedItemReappears
            | AlertKind::ConflictingSubmission => Severity::Critical,
            AlertKind::UndeclaredTransfer
            | AlertKind::UnaccountedDisappearance
            | AlertKind::HeldBySeveralStates => Severity::High,
            AlertKind::TransferNotReceived | AlertKind::ReportedLost => Severity::Medium,
            AlertKind::DuplicateInSnapshot | AlertKind::SnapshotOverdue => Severity::Low,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// An alert's identity: kind plus the fields that distinguish one condition
/// from another. Two evaluations with equal keys are the same alert.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub item: Option<ItemKey>,
    /// The state the condition is about (the submitting, losing or overdue state).
    pub state: Option<StateCode>,
    /// The other state where it matters (the receiving state of a transfer).
    pub counterparty: Option<StateCode>,
    /// The sequence number, for conflicting submissions.
    pub sequence: Option<u64>,
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(item) = &self.item {
            write!(f, " {item}")?;
        }
        if let Some(s) = &self.state {
            write!(f, " {s}")?;
        }
        if let Some(c) = &self.counterparty {
            write!(f, " -> {c}")?;
        }
        if let Some(q) = &self.sequence {
            write!(f, " #{q}")?;
        }
        Ok(())
    }
}

/// The facts that support an alert for one state: a snapshot and its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub snapshot: SnapshotRef,
    /// What the evidence shows, e.g. "holds", "last held", "declared destroyed".
    pub role: String,
    pub lines: Vec<Line>,
}

/// Who last held a key, and what became of it (docs/alerts.md, "Custody").
///
/// The custodian is the state of the newest snapshot, by as-of time, among
/// all accepted snapshots of all states, that lists the key as held; within
/// one state the higher sequence wins, and states whose holding snapshots
/// share that as-of time are all custodians. A key that no member ever
/// listed as held falls back to the states whose last listing of it is the
/// newest.
// `Known` is large and `NeverReported` empty; alert bodies keep a custody
// boxed (only seized alerts have one), so the size matters nowhere else.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Custody {
    /// No member state ever reported the key.
    NeverReported,
    Known {
        /// Every custodian, by state code; never empty.
        custodians: Vec<StateCode>,
        /// The first custodian by state code: the one the fields below describe.
        last_custodian: StateCode,
        /// Its statuses for the key in its newest snapshot that lists the key
        /// at all (so `lost`, `destroyed` or `transferred_out` when it later
        /// declared so).
        last_status: Vec<Status>,
        /// That newest snapshot that lists the key.
        last_listed_in: SnapshotRef,
        /// The custodian's last snapshot that held the key (none if no member
        /// ever held it).
        last_held_in: Option<SnapshotRef>,
        /// The custodian's first snapshot after `last_held_in` that no longer
        /// held it, if there is one.
        gone_in: Option<SnapshotRef>,
        /// The custodian's first snapshot after `last_listed_in`, when it
        /// does not list the key at all (it dropped the key from its books).
        absent_since: Option<SnapshotRef>,
        /// To whom the custodian declared the key `transferred_out`, when its
        /// last status says so and the engine still knows the receiver.
        declared_to: Vec<StateCode>,
        /// States whose latest snapshots hold it right now.
        held_now_by: Vec<StateCode>,
    },
}

/// A seizure of one serial-numbered item, reported by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seizure {
    pub key: ItemKey,
    pub model: String,
    pub serial: String,
    pub seized_at_unix_ms: i64,
    pub place: String,
    pub note: String,
}

/// What an open alert says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertBody {
    pub severity: Severity,
    /// Every raw spelling of the key seen in the evidence.
    pub spellings: Vec<String>,
    /// The states involved, sorted.
    pub states: Vec<StateCode>,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Seized items only (boxed: it is large, and most alerts have none).
    pub custody: Option<Box<Custody>>,
    pub seizures: Vec<Seizure>,
}

/// One change to the set of open alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    /// The condition started to hold; `by` names the snapshot whose arrival
    /// caused it (none for a seizure report, an equivocation or the clock).
    Opened {
        key: AlertKey,
        body: AlertBody,
        by: Option<SnapshotRef>,
    },
    /// The alert's text or evidence changed; `by` names the snapshot that
    /// changed it (none for a seizure report or the clock).
    Updated {
        key: AlertKey,
        body: AlertBody,
        by: Option<SnapshotRef>,
    },
    /// The condition no longer holds; `by` names the snapshot whose arrival
    /// removed the cause (none if the clock or a correction did).
    Cleared {
        key: AlertKey,
        by: Option<SnapshotRef>,
    },
}

impl AlertChange {
    pub fn key(&self) -> &AlertKey {
        match self {
            AlertChange::Opened { key, .. }
            | AlertChange::Updated { key, .. }
            | AlertChange::Cleared { key, .. } => key,
        }
    }
}

/// A conflicting signed header, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationRef {
    pub state: StateCode,
    pub sequence: u64,
    pub submitted: SnapshotDigest,
    pub conflicts_with: SnapshotDigest,
}

/// Reads the lines of an accepted snapshot for one key: how the engine gets
/// evidence without keeping item details in memory.
pub trait LineSource {
    fn lines(&self, snapshot: &SnapshotRef, key: &ItemKey) -> Vec<Line>;
}

/// A source with no lines: for rebuilds and tests where evidence text is not needed.
pub struct NoLines;

impl LineSource for NoLines {
    fn lines(&self, _: &SnapshotRef, _: &ItemKey) -> Vec<Line> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_kind_is_listed_once_under_its_serde_name() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in AlertKind::ALL {
            assert!(seen.insert(kind), "{kind:?} listed twice");
            let serde_name = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_name, format!("\"{}\"", kind.as_str()));
        }
    }
}
