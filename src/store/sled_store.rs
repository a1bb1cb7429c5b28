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
/// tree `chunks` (upload id ‖ chunk index → leaves), tree `uploads` (upload
/// id → nothing: uploads begun and not yet committed or aborted), tree
/// `equivocations`.
pub struct SledStore {
    db: sled::Db,
    snapshots: sled::Tree,
    chunks: sled::Tree,
    /// Uploads in progress. Lets `open` find the chunks of uploads that never
    /// committed without reading every stored chunk (which also left sled
    /// holding all of them in memory).
    uploads: sled::Tree,
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
            uploads: db.open_tree("uploads")?,
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

    /// Removes the chunks of every upload still marked in progress that no
    /// directory record names (a commit that crashed after its record was
    /// written but before its mark was removed keeps its chunks).
    fn remove_orphan_chunks(&self) -> Result<usize, StoreError> {
        let mut in_progress = Vec::new();
        for key in self.uploads.iter().keys() {
            let key = key?;
            let id =
                <[u8; 8]>::try_from(key.as_ref()).map_err(|_| corrupt("upload in progress key"))?;
            in_progress.push(UploadId(u64::from_be_bytes(id)));
        }
        if in_progress.is_empty() {
            return Ok(0);
        }
        let mut committed = BTreeSet::new();
        for entry in self.snapshots.iter() {
            let (k, v) = entry?;
            let rec = decode_record(&v).ok_or_else(|| corrupt(format!("snapshot {k:?}")))?;
            committed.insert(rec.upload);
        }
        let mut removed = 0;
        for upload in in_progress {
            if !committed.contains(&upload) {
                removed += self.remove_chunks(upload)?;
            }
            self.uploads.remove(upload.0.to_be_bytes())?;
        }
        if removed > 0 {
            tracing::info!(removed, "removed chunks of uploads that never committed");
        }
        self.db.flush()?;
        Ok(removed)
    }

    fn remove_chunks(&self, upload: UploadId) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.chunks.scan_prefix(upload.0.to_be_bytes()).keys() {
            self.chunks.remove(key?)?;
            removed += 1;
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
        let upload = UploadId(self.db.generate_id()?);
        // Written before any of its chunks: sled recovers writes in order,
        // so no chunk can survive a crash without its mark.
        self.uploads.insert(upload.0.to_be_bytes(), &[])?;
        Ok(upload)
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
            self.uploads.remove(record.upload.0.to_be_bytes())?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn abort(&self, upload: UploadId) -> Result<(), StoreError> {
        self.remove_chunks(upload)?;
        self.uploads.remove(upload.0.to_be_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Receipt, SnapshotDigest, SnapshotHeader};
    use ed25519_dalek::SigningKey;

    fn record(upload: UploadId, chunk_count: u32) -> StoredSnapshot {
        let key = SigningKey::from_bytes(&[3; 32]);
        let state = StateCode::parse("RUS").unwrap();
        let header = SnapshotHeader {
            state,
            sequence: 1,
            as_of_unix_ms: 0,
            previous_digest: SnapshotDigest::GENESIS,
            item_count: 0,
            items_root: [0; 32],
        };
        let signed = header.sign(&key);
        let digest = signed.digest();
        StoredSnapshot {
            receipt: Receipt::issue(&key, state, 1, digest, 0),
            signed,
            digest,
            upload,
            chunk_count,
        }
    }

    /// Chunks of an upload interrupted before its commit are gone after a
    /// reopen; a committed snapshot keeps its chunks, and no mark is left.
    #[test]
    fn reopen_removes_uncommitted_uploads_only() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, lost) = {
            let store = SledStore::open(dir.path()).unwrap();
            let kept = store.begin_upload().unwrap();
            store.put_chunk(kept, 0, b"committed").unwrap();
            let lost = store.begin_upload().unwrap();
            store.put_chunk(lost, 0, b"interrupted").unwrap();
            store.put_chunk(lost, 1, b"interrupted").unwrap();
            store.commit(&record(kept, 1)).unwrap();
            store.db.flush().unwrap();
            (kept, lost)
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.chunk(&record(kept, 1), 0).unwrap(), b"committed");
        assert!(store.chunk(&record(lost, 2), 0).is_err());
        assert_eq!(store.chunks.scan_prefix(lost.0.to_be_bytes()).count(), 0);
        assert_eq!(store.uploads.len(), 0);
    }
}
