//! Durable storage of accepted snapshots, behind a narrow trait.
//!
//! A snapshot is stored as the ordered chunk blobs it arrived in plus one small
//! directory record (one key per item was measured an order of magnitude
//! slower and larger in sled). Chunks are written under a fresh upload id first; the
//! directory record is the commit point, so a partial upload is never visible,
//! and orphaned chunks of uploads that never committed are removed at open.
//! The sled backend keeps the chunk bytes in one append-only file per upload
//! (sled would keep every chunk it wrote or read in its page cache).
//!
//! A backend's four stores (snapshots, seizure reports, the audit trail,
//! alerts) are opened together as one [`Storage`], which the coordinator and
//! export/import take whatever the backend.

mod bundle;
mod sled_store;

pub mod alerts;
pub mod audit_log;
pub mod memory;
pub mod seizures;
mod sled_alerts;
mod sled_audit;
mod sled_seizures;

pub use alerts::AlertStorage;
pub use audit_log::{AuditLog, AuditStore, AuditTrail};
pub use bundle::Storage;
pub use seizures::SeizureStore;
pub use sled_alerts::SledAlertStorage;
pub use sled_audit::SledAuditTrail;
pub use sled_seizures::SledSeizureStore;
pub use sled_store::{SledStore, drop_pinned, flush, is_locked_by_another_process};

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod test_support;

use ed25519_dalek::Signature;

use crate::snapshot::{HEADER_LEN, Receipt, SignedHeader, SnapshotDigest, SnapshotHeader};
use crate::state::StateCode;

/// Identifies one upload's chunks until it commits or is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub u64);

/// A stored, accepted snapshot: the signed header, where its chunks are, and
/// the receipt the coordinator issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub signed: SignedHeader,
    pub digest: SnapshotDigest,
    pub receipt: Receipt,
    pub upload: UploadId,
    pub chunk_count: u32,
}

/// A signed header that conflicts with the stored chain: evidence that a state
/// signed two different histories (docs/protocol.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub signed: SignedHeader,
    /// Digest of the snapshot it conflicts with: the stored one at the same
    /// sequence, or the stored predecessor it fails to chain to.
    pub conflicts_with: SnapshotDigest,
    pub recorded_at_unix_ms: i64,
}

/// A backend's own error, kept as its cause: no backend's types appear in
/// the storage errors (each backend converts its errors in its own file).
pub(crate) type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong below the storage trait.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {source}")]
    Backend { source: BackendError },
    /// Another process has the store open (a backend that allows one
    /// process at a time says so here rather than as `Backend`).
    #[error("storage I/O failed: {source}")]
    InUse { source: BackendError },
    #[error("storage I/O failed on {path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored record {what} is corrupt")]
    Corrupt { what: String },
    #[error("the chain moved on: sequence {sequence} of {state} is no longer the next one")]
    ChainMoved { state: StateCode, sequence: u64 },
    #[error("background task failed: {0}")]
    Task(String),
}

/// A verified upload waiting for its receipt (see [`SnapshotStore::commit_new`]).
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub signed: SignedHeader,
    pub digest: SnapshotDigest,
    pub upload: UploadId,
    pub chunk_count: u32,
}

/// The chunks of one snapshot, read lazily in order.
pub type ChunkIter = Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + Send>;

/// The operations the coordinator needs from durable storage.
///
/// Implementations must make [`SnapshotStore::commit`] atomic and durable: once
/// it returns `Ok`, the snapshot and all its chunks survive a crash; before it
/// returns, none of it is visible to readers.
pub trait SnapshotStore: Send + Sync + 'static {
    /// The newest accepted snapshot of `state`.
    fn latest(&self, state: StateCode) -> Result<Option<StoredSnapshot>, StoreError>;
    /// The accepted snapshot of `state` with this sequence number.
    fn get(&self, state: StateCode, sequence: u64) -> Result<Option<StoredSnapshot>, StoreError>;
    /// Accepted snapshots of `state` with sequence ≥ `from`, oldest first, at most `limit`.
    fn list(
        &self,
        state: StateCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredSnapshot>, StoreError>;
    /// Every state that has at least one accepted snapshot.
    fn states(&self) -> Result<Vec<StateCode>, StoreError>;

    /// Starts an upload; its chunks stay invisible until commit.
    fn begin_upload(&self) -> Result<UploadId, StoreError>;
    /// Stores chunk number `index` (0-based, consecutive) of an upload.
    fn put_chunk(&self, upload: UploadId, index: u32, leaves: &[u8]) -> Result<(), StoreError>;
    /// Makes the upload visible as `record` and flushes it to disk, provided
    /// `record` is still the next link of its state's chain (else `ChainMoved`).
    /// For records that already have their receipt (import).
    fn commit(&self, record: &StoredSnapshot) -> Result<(), StoreError> {
        self.commit_record(&record.signed, record.upload, &mut |_| record.clone())
            .map(|_| ())
    }
    /// As [`SnapshotStore::commit`] for a newly accepted snapshot whose
    /// receipt is issued at the moment of the commit: `issue` is called
    /// under the store's commit lock with the earliest acceptance time
    /// allowed (1 ms after the latest snapshot committed so far, of any
    /// state) and returns the receipt to keep. So acceptance times strictly
    /// increase in commit order, the order the reconciler sees snapshots in
    /// and a rebuild replays them in. Returns the stored record.
    fn commit_new(
        &self,
        new: NewSnapshot,
        issue: &dyn Fn(i64) -> Receipt,
    ) -> Result<StoredSnapshot, StoreError> {
        self.commit_record(&new.signed, new.upload, &mut |earliest| StoredSnapshot {
            signed: new.signed.clone(),
            digest: new.digest,
            receipt: issue(earliest),
            upload: new.upload,
            chunk_count: new.chunk_count,
        })
    }
    /// The commit behind [`SnapshotStore::commit`] and
    /// [`SnapshotStore::commit_new`], which callers use; a backend
    /// implements this one. Under the store's commit lock: checks that
    /// `signed` is still the next link of its state's chain (else
    /// `ChainMoved`), calls `make` with the earliest acceptance time allowed
    /// (1 ms after the latest time issued so far, by a commit or by
    /// [`SnapshotStore::issue_time`]; `i64::MIN` if none), stores the record
    /// it returns as the upload `upload` and counts its acceptance time as
    /// issued. Then makes it durable, and returns it.
    fn commit_record(
        &self,
        signed: &SignedHeader,
        upload: UploadId,
        make: &mut dyn FnMut(i64) -> StoredSnapshot,
    ) -> Result<StoredSnapshot, StoreError>;
    /// A time for an event that must be ordered against acceptances (a
    /// seizure report): `not_before` or later, and strictly after every
    /// acceptance time issued so far. Every later acceptance time is
    /// strictly after it, also after a restart if the caller passes the
    /// times it keeps back in at start-up. Not durable by itself.
    fn issue_time(&self, not_before: i64) -> Result<i64, StoreError>;
    /// Discards an upload's chunks.
    fn abort(&self, upload: UploadId) -> Result<(), StoreError>;
    /// Chunk `index` (0-based) of an accepted snapshot.
    fn chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError>;
    /// Bytes `[start, end)` of chunk `index` of an accepted snapshot (to its
    /// end if `end` is `None`): lookups read the part of a chunk that holds
    /// a key rather than the whole chunk.
    fn chunk_range(
        &self,
        snapshot: &StoredSnapshot,
        index: u32,
        start: u32,
        end: Option<u32>,
    ) -> Result<Vec<u8>, StoreError>;
    /// The chunks of an accepted snapshot, in order.
    fn chunks(&self, snapshot: &StoredSnapshot) -> Result<ChunkIter, StoreError>;

    /// Keeps the roots of the blocks of leaves of a verified snapshot's tree, so that an inclusion proof
    /// rehashes one block instead of the snapshot (see `crate::coordinator::trace`).
    /// Derived data, keyed by digest: not flushed here (the commit that
    /// follows flushes it), and rebuilt by a trace that finds it missing.
    fn put_block_roots(
        &self,
        digest: &SnapshotDigest,
        roots: &crate::merkle::BlockRoots,
    ) -> Result<(), StoreError>;
    /// The block roots kept for `digest`, if any (a damaged entry counts as
    /// none).
    fn block_roots(
        &self,
        digest: &SnapshotDigest,
    ) -> Result<Option<crate::merkle::BlockRoots>, StoreError>;

    /// Keeps where the pieces of a snapshot's chunks start
    /// (`crate::coordinator::lookup::encode_starts`), so that lookups after a restart
    /// need not read the snapshot whole. Derived data, keyed by digest, not
    /// flushed here; a lookup that finds it missing or damaged rebuilds it.
    fn put_piece_starts(&self, digest: &SnapshotDigest, encoded: &[u8]) -> Result<(), StoreError>;
    /// The piece starts kept for `digest`, as encoded.
    fn piece_starts(&self, digest: &SnapshotDigest) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps a conflicting signed header as evidence (flushed to disk).
    fn record_equivocation(&self, record: &Equivocation) -> Result<(), StoreError>;
    /// All recorded equivocations, by state and sequence.
    fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError>;
}

const RECORD_VERSION: u8 = 1;
const SIG_LEN: usize = 64;

/// Byte layout of a directory record (all integers big-endian):
/// version (1), header encoding (116), state signature (64), digest (32),
/// accepted_at (8), receipt signature (64), upload id (8), chunk count (4).
pub(crate) fn encode_record(r: &StoredSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HEADER_LEN + SIG_LEN + 32 + 8 + SIG_LEN + 8 + 4);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&r.signed.header.encode());
    out.extend_from_slice(&r.signed.signature.to_bytes());
    out.extend_from_slice(&r.digest.0);
    out.extend_from_slice(&r.receipt.accepted_at_unix_ms.to_be_bytes());
    out.extend_from_slice(&r.receipt.signature.to_bytes());
    out.extend_from_slice(&r.upload.0.to_be_bytes());
    out.extend_from_slice(&r.chunk_count.to_be_bytes());
    out
}

pub(crate) fn decode_record(bytes: &[u8]) -> Option<StoredSnapshot> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = bytes.get(at..at + n);
        at += n;
        s
    };
    if take(1)? != [RECORD_VERSION] {
        return None;
    }
    let header = SnapshotHeader::decode(take(HEADER_LEN)?)?;
    let signature = Signature::from_slice(take(SIG_LEN)?).ok()?;
    let digest = SnapshotDigest::from_slice(take(32)?)?;
    let accepted_at = i64::from_be_bytes(take(8)?.try_into().ok()?);
    let receipt_sig = Signature::from_slice(take(SIG_LEN)?).ok()?;
    let upload = UploadId(u64::from_be_bytes(take(8)?.try_into().ok()?));
    let chunk_count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    if at != bytes.len() || header.digest() != digest {
        return None;
    }
    Some(StoredSnapshot {
        signed: SignedHeader { header, signature },
        digest,
        receipt: Receipt {
            state: header.state,
            sequence: header.sequence,
            digest,
            accepted_at_unix_ms: accepted_at,
            signature: receipt_sig,
        },
        upload,
        chunk_count,
    })
}

/// Equivocation layout: version, header encoding, signature, conflicting digest, time.
pub(crate) fn encode_equivocation(e: &Equivocation) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HEADER_LEN + SIG_LEN + 32 + 8);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&e.signed.header.encode());
    out.extend_from_slice(&e.signed.signature.to_bytes());
    out.extend_from_slice(&e.conflicts_with.0);
    out.extend_from_slice(&e.recorded_at_unix_ms.to_be_bytes());
    out
}

pub(crate) fn decode_equivocation(bytes: &[u8]) -> Option<Equivocation> {
    if bytes.len() != 1 + HEADER_LEN + SIG_LEN + 32 + 8 || bytes[0] != RECORD_VERSION {
        return None;
    }
    let b = &bytes[1..];
    let header = SnapshotHeader::decode(&b[..HEADER_LEN])?;
    let signature = Signature::from_slice(&b[HEADER_LEN..HEADER_LEN + SIG_LEN]).ok()?;
    let rest = &b[HEADER_LEN + SIG_LEN..];
    Some(Equivocation {
        signed: SignedHeader { header, signature },
        conflicts_with: SnapshotDigest::from_slice(&rest[..32])?,
        recorded_at_unix_ms: i64::from_be_bytes(rest[32..40].try_into().ok()?),
    })
}
