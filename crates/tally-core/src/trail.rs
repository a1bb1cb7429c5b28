//! The custody trail of one item key: every stored row that lists it, with
//! the evidence that its state signed it, and what the coordinator derived
//! about the key (its alerts and custody). The coordinator's trace produces
//! one; `TraceItem` answers with it.

use crate::alert::Alert;
use crate::merkle::InclusionProof;
use crate::reconcile::{Custody, Line};
use crate::serial::ItemKey;
use crate::snapshot::{SignedHeader, SnapshotDigest};

/// One row of one stored snapshot that lists the key, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEntry {
    /// The snapshot's header and the state's signature over its encoding.
    pub signed: SignedHeader,
    pub digest: SnapshotDigest,
    /// The row as the state reported it.
    pub line: Line,
    /// The row's leaf encoding, exactly as signed.
    pub leaf: Vec<u8>,
    /// Leads from `leaf` to `signed.header.items_root`; its `tree_size` is the
    /// header's `item_count`.
    pub proof: InclusionProof,
}

/// Everything known about one item key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trail {
    pub key: ItemKey,
    /// Oldest first: by as-of time, then state, sequence and leaf position.
    pub entries: Vec<TrailEntry>,
    /// Every alert about the key, in any status, by id.
    pub alerts: Vec<Alert>,
    /// The engine's current custody summary (derived, not signed).
    pub custody: Custody,
}
