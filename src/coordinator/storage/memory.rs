//! An in-memory storage backend for tests: snapshots ([`MemoryStore`]),
//! seizure reports ([`MemorySeizureStore`]), the audit trail
//! ([`MemoryAuditTrail`]) and alerts ([`MemoryAlertStorage`]), with the sled
//! backend's commit and visibility rules (nothing visible before its
//! commit, the chain checked under the commit lock, ids and sequences never
//! reused) and nothing kept after the process; [`Storage::in_memory`] opens
//! all four. Each store has [`Faults`] to make its next writes fail, before
//! anything is stored or after the write when making it durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::alerts::{Alert, AlertEvent, AlertStorage, AlertStoreError};
use super::audit_log::{AuditLogError, AuditTrail};
use super::seizures::{SeizureLogError, SeizureReport, SeizureStore, encode};
use super::{
    BackendError, ChunkIter, Equivocation, SnapshotStore, Storage, StoreError, StoredSnapshot,
    UploadId,
};
use crate::audit::SealedRecord;
use crate::merkle::BlockRoots;
use crate::reconcile::Seizure;
use crate::snapshot::{SignedHeader, SnapshotDigest};
use crate::state::StateCode;

impl Storage {
    /// The in-memory backend: empty stores, nothing kept after the process.
    pub fn in_memory() -> Storage {
        Storage::new(
            Arc::new(MemoryStore::new()),
            Arc::new(MemorySeizureStore::new()),
            Arc::new(MemoryAuditTrail::new()),
            Arc::new(MemoryAlertStorage::new()),
            None,
            Arc::new(|| Ok(())),
        )
    }
}

/// A failure injected through [`Faults`].
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0}")]
pub struct InjectedFault(&'static str);

/// Failures to inject into one store's writes.
#[derive(Debug, Default)]
pub struct Faults {
    writes: AtomicUsize,
    flushes: AtomicUsize,
}

impl Faults {
    /// The next `n` writes fail before they change anything.
    pub fn fail_next_writes(&self, n: usize) {
        self.writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` writes that must be durable (commits, equivocations,
    /// seizure reports, audit records) fail after they are stored: what
    /// they wrote is visible, as after a failed flush in sled.
    pub fn fail_next_flushes(&self, n: usize) {
        self.flushes.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn write(&self) -> Result<(), BackendError> {
        match Self::take(&self.writes) {
            true => Err(Box::new(InjectedFault("write failed"))),
            false => Ok(()),
        }
    }

    fn flush(&self) -> Result<(), BackendError> {
        match Self::take(&self.flushes) {
            true => Err(Box::new(InjectedFault("flush failed"))),
            false => Ok(()),
        }
    }
}

/// The maps behind these locks change by whole inserts and removals only,
/// so a panic elsewhere cannot leave them inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn backend(source: BackendError) -> StoreError {
    StoreError::Backend { source }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

#[derive(Default)]
struct Snapshots {
    /// Committed directory records: what readers see.
    records: BTreeMap<(StateCode, u64), StoredSnapshot>,
    /// Chunks of every upload begun and not aborted, committed or not.
    chunks: HashMap<UploadId, BTreeMap<u32, Vec<u8>>>,
    /// Uploads begun and not yet committed or aborted.
    uploads: BTreeSet<UploadId>,
    equivocations: BTreeMap<(StateCode, u64, [u8; 32]), Equivocation>,
    block_roots: HashMap<[u8; 32], Vec<u8>>,
    piece_starts: HashMap<[u8; 32], Vec<u8>>,
}

/// Snapshots in memory.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Snapshots>,
    next_upload: AtomicU64,
    /// As the sled store's: serialises commits and holds the latest time
    /// issued (`None` until the first use reads it from the records).
    commit_lock: Mutex<Option<i64>>,
    faults: Faults,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The faults to inject into this store's writes.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn read_chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError> {
        if index >= snapshot.chunk_count {
            return Err(corrupt(format!(
                "chunk {index} of upload {} (it has {})",
                snapshot.upload.0, snapshot.chunk_count
            )));
        }
        lock(&self.data)
            .chunks
            .get(&snapshot.upload)
            .and_then(|chunks| chunks.get(&index))
            .cloned()
            .ok_or_else(|| corrupt(format!("chunk {index} of upload {}", snapshot.upload.0)))
    }
}

impl SnapshotStore for MemoryStore {
    fn latest(&self, state: StateCode) -> Result<Option<StoredSnapshot>, StoreError> {
        Ok(lock(&self.data)
            .records
            .range((state, 0)..=(state, u64::MAX))
            .next_back()
            .map(|(_, r)| r.clone()))
    }

    fn get(&self, state: StateCode, sequence: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        Ok(lock(&self.data).records.get(&(state, sequence)).cloned())
    }

    fn list(
        &self,
        state: StateCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredSnapshot>, StoreError> {
        Ok(lock(&self.data)
            .records
            .range((state, from)..=(state, u64::MAX))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn states(&self) -> Result<Vec<StateCode>, StoreError> {
        let states: BTreeSet<StateCode> =
            lock(&self.data).records.keys().map(|(s, _)| *s).collect();
        Ok(states.into_iter().collect())
    }

    fn begin_upload(&self) -> Result<UploadId, StoreError> {
        self.faults.write().map_err(backend)?;
        let upload = UploadId(self.next_upload.fetch_add(1, Ordering::SeqCst));
        let mut data = lock(&self.data);
        data.uploads.insert(upload);
        data.chunks.insert(upload, BTreeMap::new());
        Ok(upload)
    }

    fn put_chunk(&self, upload: UploadId, index: u32, leaves: &[u8]) -> Result<(), StoreError> {
        self.faults.write().map_err(backend)?;
        lock(&self.data)
            .chunks
            .get_mut(&upload)
            .ok_or_else(|| corrupt(format!("upload {} (never begun, or aborted)", upload.0)))?
            .insert(index, leaves.to_vec());
        Ok(())
    }

    fn commit_record(
        &self,
        signed: &SignedHeader,
        upload: UploadId,
        make: &mut dyn FnMut(i64) -> StoredSnapshot,
    ) -> Result<StoredSnapshot, StoreError> {
        self.faults.write().map_err(backend)?;
        let header = &signed.header;
        let mut last_issued = lock(&self.commit_lock);
        let mut data = lock(&self.data);
        if !data.chunks.contains_key(&upload) {
            return Err(corrupt(format!(
                "upload {} (never begun, or aborted)",
                upload.0
            )));
        }
        let latest = data
            .records
            .range((header.state, 0)..=(header.state, u64::MAX))
            .next_back()
            .map(|(_, r)| r);
        let next = latest.map_or(1, |l| l.signed.header.sequence + 1);
        let prev = latest.map_or(SnapshotDigest::GENESIS, |l| l.digest);
        if header.sequence != next || header.previous_digest != prev {
            return Err(StoreError::ChainMoved {
                state: header.state,
                sequence: header.sequence,
            });
        }
        let last = match *last_issued {
            Some(last) => Some(last),
            None => data
                .records
                .values()
                .map(|r| r.receipt.accepted_at_unix_ms)
                .max(),
        };
        let record = make(last.map_or(i64::MIN, |t| t.saturating_add(1)));
        data.records
            .insert((header.state, header.sequence), record.clone());
        *last_issued = last.max(Some(record.receipt.accepted_at_unix_ms));
        data.uploads.remove(&upload);
        self.faults.flush().map_err(backend)?;
        Ok(record)
    }

    fn issue_time(&self, not_before: i64) -> Result<i64, StoreError> {
        let mut last_issued = lock(&self.commit_lock);
        let last = match *last_issued {
            Some(last) => Some(last),
            None => lock(&self.data)
                .records
                .values()
                .map(|r| r.receipt.accepted_at_unix_ms)
                .max(),
        };
        let issued = last.map_or(not_before, |t| not_before.max(t.saturating_add(1)));
        *last_issued = Some(issued);
        Ok(issued)
    }

    fn abort(&self, upload: UploadId) -> Result<(), StoreError> {
        self.faults.write().map_err(backend)?;
        let mut data = lock(&self.data);
        data.chunks.remove(&upload);
        data.uploads.remove(&upload);
        Ok(())
    }

    fn chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError> {
        self.read_chunk(snapshot, index)
    }

    fn chunk_range(
        &self,
        snapshot: &StoredSnapshot,
        index: u32,
        start: u32,
        end: Option<u32>,
    ) -> Result<Vec<u8>, StoreError> {
        let chunk = self.read_chunk(snapshot, index)?;
        let len = chunk.len() as u32;
        let end = end.unwrap_or(len);
        if start > end || end > len {
            return Err(corrupt(format!(
                "bytes {start}..{end} of chunk {index} of upload {} (it has {len})",
                snapshot.upload.0
            )));
        }
        Ok(chunk[start as usize..end as usize].to_vec())
    }

    fn chunks(&self, snapshot: &StoredSnapshot) -> Result<ChunkIter, StoreError> {
        let chunks: Vec<_> = (0..snapshot.chunk_count)
            .map(|i| self.read_chunk(snapshot, i))
            .collect();
        Ok(Box::new(chunks.into_iter()))
    }

    fn put_block_roots(
        &self,
        digest: &SnapshotDigest,
        roots: &BlockRoots,
    ) -> Result<(), StoreError> {
        self.faults.write().map_err(backend)?;
        lock(&self.data)
            .block_roots
            .insert(digest.0, roots.encode());
        Ok(())
    }

    fn block_roots(&self, digest: &SnapshotDigest) -> Result<Option<BlockRoots>, StoreError> {
        Ok(lock(&self.data)
            .block_roots
            .get(&digest.0)
            .and_then(|bytes| BlockRoots::decode(bytes)))
    }

    fn put_piece_starts(&self, digest: &SnapshotDigest, encoded: &[u8]) -> Result<(), StoreError> {
        self.faults.write().map_err(backend)?;
        lock(&self.data)
            .piece_starts
            .insert(digest.0, encoded.to_vec());
        Ok(())
    }

    fn piece_starts(&self, digest: &SnapshotDigest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.data).piece_starts.get(&digest.0).cloned())
    }

    fn record_equivocation(&self, record: &Equivocation) -> Result<(), StoreError> {
        self.faults.write().map_err(backend)?;
        let h = &record.signed.header;
        lock(&self.data)
            .equivocations
            .insert((h.state, h.sequence, h.digest().0), record.clone());
        self.faults.flush().map_err(backend)
    }

    fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        Ok(lock(&self.data).equivocations.values().cloned().collect())
    }
}

/// Seizure reports in memory, kept in their stored form (as the sled
/// backend's, so the page budget counts the same bytes).
#[derive(Default)]
pub struct MemorySeizureStore {
    reports: Mutex<BTreeMap<u64, Vec<u8>>>,
    faults: Faults,
}

impl MemorySeizureStore {
    pub fn new() -> MemorySeizureStore {
        MemorySeizureStore::default()
    }

    /// The faults to inject into this store's writes.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl SeizureStore for MemorySeizureStore {
    fn record(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, SeizureLogError> {
        self.faults.write().map_err(SeizureLogError::Backend)?;
        let mut reports = lock(&self.reports);
        let id = reports.keys().next_back().map_or(1, |newest| newest + 1);
        let report = SeizureReport {
            id,
            reported_at_unix_ms: now_unix_ms,
            items,
        };
        reports.insert(id, encode(&report)?);
        self.faults.flush().map_err(SeizureLogError::Backend)?;
        Ok(report)
    }

    fn scan_after(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool, SeizureLogError>,
    ) -> Result<(), SeizureLogError> {
        let Some(first) = id.checked_add(1) else {
            return Ok(());
        };
        for stored in lock(&self.reports).range(first..).map(|(_, v)| v) {
            if !visit(stored)? {
                break;
            }
        }
        Ok(())
    }
}

/// The audit trail in memory: records as stored by sled, by sequence.
#[derive(Default)]
pub struct MemoryAuditTrail {
    records: Mutex<BTreeMap<u64, Vec<u8>>>,
    faults: Faults,
}

impl MemoryAuditTrail {
    /// An empty trail.
    pub fn new() -> MemoryAuditTrail {
        MemoryAuditTrail::default()
    }

    /// The faults to inject into this store's writes (a failed flush is
    /// the record's flush, after it is stored).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl AuditTrail for MemoryAuditTrail {
    fn put(&self, record: &SealedRecord) -> Result<(), AuditLogError> {
        self.faults.write().map_err(AuditLogError::Backend)?;
        lock(&self.records).insert(record.sequence, record.to_bytes());
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditLogError> {
        self.faults.flush().map_err(AuditLogError::Backend)
    }

    fn list(&self, from_sequence: u64, limit: usize) -> Result<Vec<SealedRecord>, AuditLogError> {
        Ok(lock(&self.records)
            .range(from_sequence..)
            .take(limit)
            .map(|(sequence, bytes)| SealedRecord::from_bytes(*sequence, bytes))
            .collect())
    }

    fn last(&self) -> Result<Option<SealedRecord>, AuditLogError> {
        Ok(lock(&self.records)
            .last_key_value()
            .map(|(sequence, bytes)| SealedRecord::from_bytes(*sequence, bytes)))
    }
}

#[derive(Default)]
struct AlertData {
    alerts: BTreeMap<u64, Alert>,
    latest: BTreeMap<Vec<u8>, u64>,
    events: BTreeMap<u64, AlertEvent>,
}

/// Alerts and their events in memory (the lifecycle is `AlertStore`'s).
#[derive(Default)]
pub struct MemoryAlertStorage {
    data: Mutex<AlertData>,
    /// What [`AlertStorage::quarantine`] moved aside, by the name it returned.
    quarantined: Mutex<Vec<(String, AlertData)>>,
    faults: Faults,
}

impl MemoryAlertStorage {
    pub fn new() -> MemoryAlertStorage {
        MemoryAlertStorage::default()
    }

    /// The faults to inject into this store's writes.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl AlertStorage for MemoryAlertStorage {
    fn get(&self, id: u64) -> Result<Option<Alert>, AlertStoreError> {
        Ok(lock(&self.data).alerts.get(&id).cloned())
    }

    fn newest_id(&self, ident: &[u8]) -> Result<Option<u64>, AlertStoreError> {
        Ok(lock(&self.data).latest.get(ident).copied())
    }

    fn newest_ids(&self) -> Result<Vec<u64>, AlertStoreError> {
        Ok(lock(&self.data).latest.values().copied().collect())
    }

    fn scan(
        &self,
        before: u64,
        oldest_first: bool,
        visit: &mut dyn FnMut(Alert) -> bool,
    ) -> Result<(), AlertStoreError> {
        // Copied out first: `visit` runs without the lock.
        let mut alerts: Vec<Alert> = lock(&self.data)
            .alerts
            .range(..before)
            .map(|(_, a)| a.clone())
            .collect();
        if !oldest_first {
            alerts.reverse();
        }
        for alert in alerts {
            if !visit(alert) {
                break;
            }
        }
        Ok(())
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<AlertEvent>, AlertStoreError> {
        Ok(lock(&self.data)
            .events
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn last_alert_id(&self) -> Result<u64, AlertStoreError> {
        Ok(lock(&self.data)
            .alerts
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0))
    }

    fn last_cursor(&self) -> Result<u64, AlertStoreError> {
        Ok(lock(&self.data)
            .events
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0))
    }

    fn commit(
        &self,
        alerts: &[(Vec<u8>, Alert)],
        events: &[AlertEvent],
    ) -> Result<(), AlertStoreError> {
        self.faults.write().map_err(AlertStoreError::Backend)?;
        let mut data = lock(&self.data);
        for (ident, alert) in alerts {
            data.alerts.insert(alert.id, alert.clone());
            data.latest.insert(ident.clone(), alert.id);
        }
        for event in events {
            data.events.insert(event.cursor, event.clone());
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AlertStoreError> {
        self.faults.flush().map_err(AlertStoreError::Backend)
    }

    fn quarantine(&self, now_unix_ms: i64) -> Result<Vec<String>, AlertStoreError> {
        self.faults.write().map_err(AlertStoreError::Backend)?;
        let name = format!("quarantine.{now_unix_ms}");
        let aside = std::mem::take(&mut *lock(&self.data));
        lock(&self.quarantined).push((name.clone(), aside));
        Ok(vec![name])
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::{Action, Actor, Event, Outcome, verify};
    use crate::coordinator::storage::audit_log::{AuditLog, AuditStore};
    use crate::snapshot::{Receipt, SnapshotHeader};

    fn event() -> Event {
        Event {
            at_unix_ms: 1,
            actor: Actor::Anonymous,
            peer: None,
            action: Action::AcknowledgeAlert { alert_id: 1 },
            outcome: Outcome::Ok,
        }
    }

    /// A failed write stores nothing; a failed flush leaves what it wrote
    /// visible, and its sequence is not sealed again.
    #[test]
    fn audit_faults_fail_before_or_after_the_write() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let trail = std::sync::Arc::new(MemoryAuditTrail::new());
        let log = AuditLog::open(trail.clone(), key.clone()).unwrap();
        trail.faults().fail_next_writes(1);
        assert!(matches!(
            log.append(event()),
            Err(AuditLogError::Backend(_))
        ));
        assert_eq!(
            (log.last_sequence(), log.list(0, 10).unwrap().len()),
            (0, 0)
        );
        trail.faults().fail_next_flushes(1);
        assert!(log.append(event()).is_err());
        assert_eq!(
            (log.last_sequence(), log.list(0, 10).unwrap().len()),
            (1, 1)
        );
        assert_eq!(log.append(event()).unwrap().sequence, 2);
        let all = log.list(0, 10).unwrap();
        assert_eq!(verify(&all, &key.verifying_key()).unwrap().records, 2);
    }

    #[test]
    fn seizure_faults_fail_before_or_after_the_write() {
        let log = MemorySeizureStore::new();
        log.faults().fail_next_writes(1);
        assert!(log.record(Vec::new(), 1).is_err());
        assert!(log.all().unwrap().is_empty());
        log.faults().fail_next_flushes(1);
        assert!(log.record(Vec::new(), 2).is_err());
        assert_eq!(log.record(Vec::new(), 3).unwrap().id, 2);
        assert_eq!(log.all().unwrap().len(), 2);
    }

    #[test]
    fn snapshot_faults_fail_before_or_after_the_commit() {
        let store = MemoryStore::new();
        let key = SigningKey::from_bytes(&[2; 32]);
        let state = StateCode::parse("RUS").unwrap();
        let signed = SnapshotHeader {
            state,
            sequence: 1,
            as_of_unix_ms: 0,
            previous_digest: SnapshotDigest::GENESIS,
            item_count: 0,
            items_root: [0; 32],
        }
        .sign(&key);
        let digest = signed.digest();
        store.faults().fail_next_writes(1);
        assert!(store.begin_upload().is_err());
        let upload = store.begin_upload().unwrap();
        let record = StoredSnapshot {
            receipt: Receipt::issue(&key, state, 1, digest, 0),
            signed,
            digest,
            upload,
            chunk_count: 0,
        };
        store.faults().fail_next_writes(1);
        assert!(matches!(
            store.commit(&record),
            Err(StoreError::Backend { .. })
        ));
        assert_eq!(store.latest(state).unwrap(), None);
        store.faults().fail_next_flushes(1);
        assert!(store.commit(&record).is_err());
        assert_eq!(store.latest(state).unwrap(), Some(record.clone()));
        assert!(matches!(
            store.commit(&record),
            Err(StoreError::ChainMoved { sequence: 1, .. })
        ));
    }
}
