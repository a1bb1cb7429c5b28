//! The embedded default backend: sled.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use super::{
    ChunkIter, Equivocation, SnapshotStore, StoreError, StoredSnapshot, UploadId,
    decode_equivocation, decode_record, encode_equivocation, encode_record,
};
use crate::state::StateCode;

/// Snapshots in sled: tree `snapshots` (state ‖ sequence → directory record),
/// tree `chunks` (upload id ‖ chunk index → leaves), tree `equivocations`.
pub struct SledStore {
    db: sled::Db,
    snapshots: sled::Tree,
    chunks: sled::Tree,
    equivocations: sled::Tree,
    /// Serialises commits so that "is this still the next link?" and the
    /// insert happen as one step. Commits are rare and short; uploads run in
    /// parallel up to the commit.
    commit_lock: Mutex<()>,
}

fn snapshot_key(state: StateCode, sequence: u64) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[..3].copy_from_slice(state.as_bytes());
    k[3..].copy_from_slice(&sequence.to_be_bytes());
    k
}

fn chunk_key(upload: UploadId, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&upload.0.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and removes chunks of uploads that
    /// never committed.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let store = SledStore {
            snapshots: db.open_tree("snapshots")?,
            chunks: db.open_tree("chunks")?,
            equivocations: db.open_tree("equivocations")?,
            db,
            commit_lock: Mutex::new(()),
        };
        store.remove_orphan_chunks()?;
        Ok(store)
    }

    /// The underlying database, for other components' trees (alerts).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn remove_orphan_chunks(&self) -> Result<usize, StoreError> {
        let mut committed = BTreeSet::new();
        for entry in self.snapshots.iter() {
            let (k, v) = entry?;
            let rec = decode_record(&v).ok_or_else(|| corrupt(format!("snapshot {k:?}")))?;
            committed.insert(rec.upload);
        }
        let mut removed = 0;
        for key in self.chunks.iter().keys() {
            let key = key?;
            let upload = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(|b| UploadId(u64::from_be_bytes(b)))
                .ok_or_else(|| corrupt("chunk key"))?;
            if !committed.contains(&upload) {
                self.chunks.remove(key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed chunks of uploads that never committed");
            self.db.flush()?;
        }
        Ok(removed)
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<StoredSnapshot, StoreError> {
        decode_record(value)
            .ok_or_else(|| corrupt(format!("snapshot directory entry {}", hex::encode(key))))
    }
}

impl SnapshotStore for SledStore {
    fn latest(&self, state: StateCode) -> Result<Option<StoredSnapshot>, StoreError> {
        match self.snapshots.scan_prefix(state.as_bytes()).next_back() {
            Some(entry) => {
                let (k, v) = entry?;
                self.decode(&k, &v).map(Some)
            }
            None => Ok(None),
        }
    }

    fn get(&self, state: StateCode, sequence: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        let key = snapshot_key(state, sequence);
        self.snapshots
            .get(key)?
            .map(|v| self.decode(&key, &v))
            .transpose()
    }

    fn list(
        &self,
        state: StateCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredSnapshot>, StoreError> {
        self.snapshots
            .range(snapshot_key(state, from)..=snapshot_key(state, u64::MAX))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                self.decode(&k, &v)
            })
            .collect()
    }

    fn states(&self) -> Result<Vec<StateCode>, StoreError> {
        let mut states = BTreeSet::new();
        for key in self.snapshots.iter().keys() {
            let key = key?;
            let code = key
                .get(..3)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| StateCode::parse(s).ok())
                .ok_or_else(|| corrupt("snapshot key"))?;
            states.insert(code);
        }
        Ok(states.into_iter().collect())
    }

    fn begin_upload(&self) -> Result<UploadId, StoreError> {
        Ok(UploadId(self.db.generate_id()?))
    }

    fn put_chunk(&self, upload: UploadId, index: u32, leaves: &[u8]) -> Result<(), StoreError> {
        self.chunks.insert(chunk_key(upload, index), leaves)?;
        Ok(())
    }

    fn commit(&self, record: &StoredSnapshot) -> Result<(), StoreError> {
        let header = &record.signed.header;
        // Chunks first, then the directory record: sled recovers writes in
        // order, and the first flush makes sure no record can ever point at
        // chunks that did not reach the disk.
        self.db.flush()?;
        {
            let _guard = self
                .commit_lock
                .lock()
                .map_err(|_| StoreError::Task("commit lock poisoned".into()))?;
            let latest = self.latest(header.state)?;
            let next = latest.as_ref().map_or(1, |l| l.signed.header.sequence + 1);
            let prev = latest.map_or(crate::snapshot::SnapshotDigest::GENESIS, |l| l.digest);
            if header.sequence != next || header.previous_digest != prev {
                return Err(StoreError::ChainMoved {
                    state: header.state,
                    sequence: header.sequence,
                });
            }
            self.snapshots.insert(
                snapshot_key(header.state, header.sequence),
                encode_record(record),
            )?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn abort(&self, upload: UploadId) -> Result<(), StoreError> {
        for key in self.chunks.scan_prefix(upload.0.to_be_bytes()).keys() {
            self.chunks.remove(key?)?;
        }
        Ok(())
    }

    fn chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError> {
        self.chunks
            .get(chunk_key(snapshot.upload, index))?
            .map(|v| v.to_vec())
            .ok_or_else(|| corrupt(format!("chunk {index} of upload {}", snapshot.upload.0)))
    }

    fn chunks(&self, snapshot: &StoredSnapshot) -> Result<ChunkIter, StoreError> {
        let tree = self.chunks.clone();
        let upload = snapshot.upload;
        let count = snapshot.chunk_count;
        Ok(Box::new((0..count).map(move |i| {
            tree.get(chunk_key(upload, i))?
                .map(|v| v.to_vec())
                .ok_or_else(|| corrupt(format!("chunk {i} of upload {}", upload.0)))
        })))
    }

    fn record_equivocation(&self, record: &Equivocation) -> Result<(), StoreError> {
        let h = &record.signed.header;
        let mut key = Vec::with_capacity(43);
        key.extend_from_slice(&snapshot_key(h.state, h.sequence));
        key.extend_from_slice(&h.digest().0);
        self.equivocations
            .insert(key, encode_equivocation(record))?;
        self.db.flush()?;
        Ok(())
    }

    fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        self.equivocations
            .iter()
            .values()
            .map(|v| decode_equivocation(&v?).ok_or_else(|| corrupt("equivocation record")))
            .collect()
    }
}
