//! The embedded default backend: sled.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::sled_audit::SledAuditTrail;
use super::{
    ChunkIter, Equivocation, SledAlertStorage, SledSeizureStore, SnapshotStore, Storage,
    StoreError, StoredSnapshot, UploadId, decode_equivocation, decode_record, encode_equivocation,
    encode_record,
};
use crate::snapshot::{SignedHeader, SnapshotDigest};
use crate::state::StateCode;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        if is_locked_by_another_process(&e) {
            StoreError::InUse {
                source: Box::new(e),
            }
        } else {
            StoreError::Backend {
                source: Box::new(e),
            }
        }
    }
}

/// Returns true if and only if `e` says that another process has this sled
/// database open: sled takes an exclusive file lock for as long as a process
/// has it open, and reports failing to get it only in the message.
pub fn is_locked_by_another_process(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Flushes a sled database to disk; every flush in Tally goes through here.
///
/// sled 0.34.7's flush reads the current IO buffer through a raw pointer
/// without pinning an epoch, while another thread may seal that buffer and
/// retire it for epoch-based reclamation: the buffer can be freed under the
/// reader. AddressSanitizer caught this as a heap-use-after-free in the
/// `submit_sequence` fuzz target (docs/fuzzing.md). Holding an epoch guard
/// across the flush keeps any buffer retired meanwhile alive until it ends.
/// sled's own periodic flush thread is not covered (it is inside sled).
#[allow(clippy::disallowed_methods)]
pub fn flush(tree: &sled::Tree) -> sled::Result<usize> {
    let _epoch = sled::pin();
    tree.flush()
}

/// Drops `value` (something that holds sled trees) with an epoch pinned:
/// sled flushes a tree when its last handle drops, the same unpinned way as
/// [`flush`] works around (the fuzz target found that one too). Covers the
/// handles `value` holds last; not those dropped elsewhere.
pub fn drop_pinned<T>(value: T) {
    let _epoch = sled::pin();
    drop(value);
}

/// Snapshots in sled plus one chunk file per upload.
///
/// sled trees: `snapshots` (state ‖ sequence → directory record),
/// `chunk_locations` (upload id ‖ chunk index → offset u64 ‖ length u32, big
/// endian, in the upload's chunk file), `uploads` (upload id → nothing:
/// uploads begun and not yet committed or aborted), `equivocations`.
///
/// Chunk bytes live in `leaf-chunks/<upload id, 16 hex digits>.chunks` next
/// to sled's files, appended as they arrive and read back with positioned
/// reads. They stay out of sled because sled keeps every value it wrote or
/// read in its page cache (about 65 MB per 1,000,000-item snapshot, and its
/// `cache_capacity` did not bound it); the operating system's file cache is
/// not the coordinator's memory. Durability is unchanged: `commit` syncs the
/// chunk file and its directory before the directory record is written.
pub struct SledStore {
    db: sled::Db,
    snapshots: sled::Tree,
    /// Chunk bytes and their locations (shared with chunk iterators).
    chunks: Arc<ChunkFiles>,
    /// Uploads in progress. Lets `open` find the chunks of uploads that never
    /// committed without reading every stored chunk (which also left sled
    /// holding all of them in memory).
    uploads: sled::Tree,
    equivocations: sled::Tree,
    /// Digest → the snapshot's Merkle block roots (`BlockRoots::encode`).
    block_roots: sled::Tree,
    /// Digest → where the pieces of its chunks start (`lookup::encode_starts`).
    piece_starts: sled::Tree,
    /// The store's directory (the reconciler keeps its checkpoint there,
    /// see [`Storage::dir`]).
    dir: PathBuf,
    /// Serialises commits so that "is this still the next link?", the
    /// receipt's acceptance time and the insert happen as one step. Holds
    /// the latest time issued: an acceptance time committed or a time given
    /// by `issue_time` (`None` until the first use reads the latest
    /// acceptance time from the store). Commits are rare and short; uploads,
    /// and the syncs before the insert, run in parallel.
    commit_lock: Mutex<Option<i64>>,
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

/// The chunk files and the sled tree that locates chunks in them.
struct ChunkFiles {
    /// Where each chunk is in its upload's file.
    locations: sled::Tree,
    /// Directory of the chunk files.
    dir: PathBuf,
    /// Open chunk files: appended to while uploading, read when accepted.
    open: Mutex<HashMap<UploadId, Arc<ChunkFile>>>,
}

/// One upload's chunk file and its length so far.
struct ChunkFile {
    file: File,
    path: PathBuf,
    /// Bytes written so far: where the next chunk goes.
    len: Mutex<u64>,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// The maps behind this lock change by single inserts and removals only, so
/// a panic elsewhere cannot leave them inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Syncs a directory so that files created or removed in it stay so.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error(dir))
}

impl ChunkFiles {
    fn path(&self, upload: UploadId) -> PathBuf {
        self.dir.join(format!("{:016x}.chunks", upload.0))
    }

    /// Removes an upload's chunk locations and file; returns how many chunks
    /// it had located.
    fn remove_chunks(&self, upload: UploadId) -> Result<usize, StoreError> {
        lock(&self.open).remove(&upload);
        let mut removed = 0;
        for key in self.locations.scan_prefix(upload.0.to_be_bytes()).keys() {
            self.locations.remove(key?)?;
            removed += 1;
        }
        let path = self.path(upload);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(&path)(e)),
        }
        Ok(removed)
    }

    /// The chunk file of an upload, opened once and kept.
    fn file(&self, upload: UploadId) -> Result<Arc<ChunkFile>, StoreError> {
        if let Some(f) = lock(&self.open).get(&upload) {
            return Ok(f.clone());
        }
        let path = self.path(upload);
        let file = File::open(&path).map_err(file_error(&path))?;
        let len = file.metadata().map_err(file_error(&path))?.len();
        let f = Arc::new(ChunkFile {
            file,
            path,
            len: Mutex::new(len),
        });
        lock(&self.open).insert(upload, f.clone());
        Ok(f)
    }

    fn read(&self, upload: UploadId, index: u32) -> Result<Vec<u8>, StoreError> {
        self.read_range(upload, index, 0, None)
    }

    /// Bytes `[start, end)` of a chunk (`end` `None`: to its end).
    fn read_range(
        &self,
        upload: UploadId,
        index: u32,
        start: u32,
        end: Option<u32>,
    ) -> Result<Vec<u8>, StoreError> {
        let missing = || corrupt(format!("chunk {index} of upload {}", upload.0));
        let location = self
            .locations
            .get(chunk_key(upload, index))?
            .ok_or_else(missing)?;
        let (offset, len) = match location.as_ref() {
            [o @ .., l0, l1, l2, l3] if o.len() == 8 => (
                u64::from_be_bytes(o.try_into().map_err(|_| missing())?),
                u32::from_be_bytes([*l0, *l1, *l2, *l3]),
            ),
            _ => return Err(missing()),
        };
        let end = end.unwrap_or(len);
        if start > end || end > len {
            return Err(corrupt(format!(
                "bytes {start}..{end} of chunk {index} of upload {} (it has {len})",
                upload.0
            )));
        }
        let f = self.file(upload)?;
        let mut bytes = vec![0; (end - start) as usize];
        f.file
            .read_exact_at(&mut bytes, offset + u64::from(start))
            .map_err(file_error(&f.path))?;
        Ok(bytes)
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and removes chunks of uploads that
    /// never committed.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let chunk_dir = dir.join("leaf-chunks");
        std::fs::create_dir_all(&chunk_dir).map_err(file_error(&chunk_dir))?;
        let store = SledStore {
            snapshots: db.open_tree("snapshots")?,
            chunks: Arc::new(ChunkFiles {
                locations: db.open_tree("chunk_locations")?,
                dir: chunk_dir,
                open: Mutex::new(HashMap::new()),
            }),
            uploads: db.open_tree("uploads")?,
            equivocations: db.open_tree("equivocations")?,
            block_roots: db.open_tree("block_roots")?,
            piece_starts: db.open_tree("piece_starts")?,
            dir: dir.to_path_buf(),
            db,
            commit_lock: Mutex::new(None),
        };
        store.remove_orphan_chunks()?;
        Ok(store)
    }

    /// The latest time issued, read from the store at the first use.
    fn last_issued(&self, held: &Option<i64>) -> Result<Option<i64>, StoreError> {
        match *held {
            Some(last) => Ok(Some(last)),
            None => self.latest_acceptance(),
        }
    }

    /// The latest acceptance time of any stored snapshot. Read once per
    /// process, at the first commit. Every snapshot, not only each state's
    /// latest: a store written before times were issued under the commit
    /// lock, or imported, can hold a later time earlier in a chain.
    fn latest_acceptance(&self) -> Result<Option<i64>, StoreError> {
        let mut latest = None;
        for entry in self.snapshots.iter() {
            let (k, v) = entry?;
            let record = self.decode(&k, &v)?;
            latest = latest.max(Some(record.receipt.accepted_at_unix_ms));
        }
        Ok(latest)
    }

    /// The underlying database, whose trees hold the other stores of
    /// [`Storage::on_sled`] (tests reach into them).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Removes the chunks of every upload that no directory record names:
    /// those still marked in progress (a commit that crashed after its record
    /// was written but before its mark was removed keeps its chunks), and
    /// chunk files whose mark never reached the disk.
    fn remove_orphan_chunks(&self) -> Result<usize, StoreError> {
        let mut committed = BTreeSet::new();
        for entry in self.snapshots.iter() {
            let (k, v) = entry?;
            let rec = decode_record(&v).ok_or_else(|| corrupt(format!("snapshot {k:?}")))?;
            committed.insert(rec.upload);
        }
        let mut orphans = BTreeSet::new();
        for key in self.uploads.iter().keys() {
            let key = key?;
            let id =
                <[u8; 8]>::try_from(key.as_ref()).map_err(|_| corrupt("upload in progress key"))?;
            orphans.insert(UploadId(u64::from_be_bytes(id)));
        }
        let listing = std::fs::read_dir(&self.chunks.dir).map_err(file_error(&self.chunks.dir))?;
        for entry in listing {
            let entry = entry.map_err(file_error(&self.chunks.dir))?;
            let name = entry.file_name();
            let upload = name
                .to_str()
                .and_then(|n| n.strip_suffix(".chunks"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .map(UploadId);
            match upload {
                Some(upload) => {
                    orphans.insert(upload);
                }
                None => tracing::warn!(file = ?entry.path(), "unexpected file among chunk files"),
            }
        }
        orphans.retain(|u| !committed.contains(u));
        let mut removed = 0;
        for &upload in &orphans {
            removed += self.chunks.remove_chunks(upload)?;
        }
        for key in self.uploads.iter().keys() {
            self.uploads.remove(key?)?;
        }
        if !orphans.is_empty() {
            tracing::info!(
                uploads = orphans.len(),
                removed,
                "removed chunks of uploads that never committed"
            );
            sync_dir(&self.chunks.dir)?;
        }
        flush(&self.db)?;
        Ok(removed)
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<StoredSnapshot, StoreError> {
        decode_record(value)
            .ok_or_else(|| corrupt(format!("snapshot directory entry {}", hex::encode(key))))
    }
}

impl Storage {
    /// The sled backend in `dir` (created if absent): one database holds
    /// every store, with the chunk files beside it (see [`SledStore`]).
    pub fn open_sled(dir: &Path) -> Result<Storage, StoreError> {
        Storage::on_sled(SledStore::open(dir)?)
    }

    /// The sled backend around an opened snapshot store: the other stores
    /// are trees of its database, and flushing it flushes them all.
    pub fn on_sled(store: SledStore) -> Result<Storage, StoreError> {
        let db = store.db.clone();
        let seizures = SledSeizureStore::open(&db).map_err(opening)?;
        let audit = SledAuditTrail::open(&db).map_err(opening)?;
        let alerts = SledAlertStorage::open(&db).map_err(opening)?;
        let dir = store.dir.clone();
        Ok(Storage::new(
            Arc::new(store),
            Arc::new(seizures),
            Arc::new(audit),
            Arc::new(alerts),
            Some(dir),
            Arc::new(move || {
                flush(&db)?;
                Ok(())
            }),
        ))
    }
}

/// Another store's error while opening the bundle, as a storage error.
fn opening(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend {
        source: Box::new(source),
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
        // Marked before any chunk location is written: sled recovers writes
        // in order, so no location survives a crash without its mark. (A
        // chunk file without either is found by listing the directory.)
        self.uploads.insert(upload.0.to_be_bytes(), &[])?;
        let path = self.chunks.path(upload);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(file_error(&path))?;
        lock(&self.chunks.open).insert(
            upload,
            Arc::new(ChunkFile {
                file,
                path,
                len: Mutex::new(0),
            }),
        );
        Ok(upload)
    }

    fn put_chunk(&self, upload: UploadId, index: u32, leaves: &[u8]) -> Result<(), StoreError> {
        let f = self.chunks.file(upload)?;
        let len = u32::try_from(leaves.len())
            .map_err(|_| corrupt(format!("chunk {index} of upload {} over 4 GiB", upload.0)))?;
        let offset = {
            let mut end = lock(&f.len);
            let offset = *end;
            (&f.file).write_all(leaves).map_err(file_error(&f.path))?;
            *end += u64::from(len);
            offset
        };
        let mut location = [0u8; 12];
        location[..8].copy_from_slice(&offset.to_be_bytes());
        location[8..].copy_from_slice(&len.to_be_bytes());
        self.chunks
            .locations
            .insert(chunk_key(upload, index), &location)?;
        Ok(())
    }

    fn commit_record(
        &self,
        signed: &SignedHeader,
        upload: UploadId,
        make: &mut dyn FnMut(i64) -> StoredSnapshot,
    ) -> Result<StoredSnapshot, StoreError> {
        let header = &signed.header;
        // Chunks first, then the directory record: the chunk file and its
        // directory entry are synced and the chunk locations flushed before
        // the record is written, so no record can ever point at chunks that
        // did not reach the disk.
        let f = self.chunks.file(upload)?;
        f.file.sync_all().map_err(file_error(&f.path))?;
        sync_dir(&self.chunks.dir)?;
        flush(&self.db)?;
        let record = {
            let mut last_issued = self
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
            let last = self.last_issued(&last_issued)?;
            let record = make(last.map_or(i64::MIN, |t| t.saturating_add(1)));
            self.snapshots.insert(
                snapshot_key(header.state, header.sequence),
                encode_record(&record),
            )?;
            // Counted as issued once inserted, even if what follows fails.
            *last_issued = last.max(Some(record.receipt.accepted_at_unix_ms));
            self.uploads.remove(upload.0.to_be_bytes())?;
            record
        };
        flush(&self.db)?;
        Ok(record)
    }

    fn issue_time(&self, not_before: i64) -> Result<i64, StoreError> {
        let mut last_issued = self
            .commit_lock
            .lock()
            .map_err(|_| StoreError::Task("commit lock poisoned".into()))?;
        let last = self.last_issued(&last_issued)?;
        let issued = last.map_or(not_before, |t| not_before.max(t.saturating_add(1)));
        *last_issued = Some(issued);
        Ok(issued)
    }

    fn abort(&self, upload: UploadId) -> Result<(), StoreError> {
        self.chunks.remove_chunks(upload)?;
        self.uploads.remove(upload.0.to_be_bytes())?;
        Ok(())
    }

    fn chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError> {
        if index >= snapshot.chunk_count {
            return Err(corrupt(format!(
                "chunk {index} of upload {} (it has {})",
                snapshot.upload.0, snapshot.chunk_count
            )));
        }
        self.chunks.read(snapshot.upload, index)
    }

    fn chunk_range(
        &self,
        snapshot: &StoredSnapshot,
        index: u32,
        start: u32,
        end: Option<u32>,
    ) -> Result<Vec<u8>, StoreError> {
        if index >= snapshot.chunk_count {
            return Err(corrupt(format!(
                "chunk {index} of upload {} (it has {})",
                snapshot.upload.0, snapshot.chunk_count
            )));
        }
        self.chunks.read_range(snapshot.upload, index, start, end)
    }

    fn chunks(&self, snapshot: &StoredSnapshot) -> Result<ChunkIter, StoreError> {
        let files = self.chunks.clone();
        let upload = snapshot.upload;
        let count = snapshot.chunk_count;
        Ok(Box::new((0..count).map(move |i| files.read(upload, i))))
    }

    fn record_equivocation(&self, record: &Equivocation) -> Result<(), StoreError> {
        let h = &record.signed.header;
        let mut key = Vec::with_capacity(43);
        key.extend_from_slice(&snapshot_key(h.state, h.sequence));
        key.extend_from_slice(&h.digest().0);
        self.equivocations
            .insert(key, encode_equivocation(record))?;
        flush(&self.db)?;
        Ok(())
    }

    fn put_block_roots(
        &self,
        digest: &SnapshotDigest,
        roots: &crate::merkle::BlockRoots,
    ) -> Result<(), StoreError> {
        self.block_roots.insert(digest.0, roots.encode())?;
        Ok(())
    }

    fn block_roots(
        &self,
        digest: &SnapshotDigest,
    ) -> Result<Option<crate::merkle::BlockRoots>, StoreError> {
        Ok(self
            .block_roots
            .get(digest.0)?
            .and_then(|bytes| crate::merkle::BlockRoots::decode(&bytes)))
    }

    fn put_piece_starts(&self, digest: &SnapshotDigest, encoded: &[u8]) -> Result<(), StoreError> {
        self.piece_starts.insert(digest.0, encoded)?;
        Ok(())
    }

    fn piece_starts(&self, digest: &SnapshotDigest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.piece_starts.get(digest.0)?.map(|v| v.to_vec()))
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
    use crate::coordinator::storage::NewSnapshot;
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

    /// The first commit of a process issues a time after every stored one,
    /// even one earlier in a chain than a state's latest snapshot.
    #[test]
    fn new_acceptance_times_follow_every_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let at = |time: i64, sequence: u64, previous: SnapshotDigest, upload: UploadId| {
            let mut r = record(upload, 0);
            r.signed.header.sequence = sequence;
            r.signed.header.previous_digest = previous;
            r.signed = r.signed.header.sign(&key);
            r.digest = r.signed.digest();
            r.receipt = Receipt::issue(&key, r.signed.header.state, sequence, r.digest, time);
            r
        };
        let second_digest = {
            let store = SledStore::open(dir.path()).unwrap();
            let first = at(
                9_000,
                1,
                SnapshotDigest::GENESIS,
                store.begin_upload().unwrap(),
            );
            store.commit(&first).unwrap();
            let second = at(7_000, 2, first.digest, store.begin_upload().unwrap());
            store.commit(&second).unwrap();
            second.digest
        };
        let store = SledStore::open(dir.path()).unwrap();
        let third = at(0, 3, second_digest, store.begin_upload().unwrap());
        let issued = store
            .commit_new(
                NewSnapshot {
                    signed: third.signed.clone(),
                    digest: third.digest,
                    upload: third.upload,
                    chunk_count: 0,
                },
                &|earliest| {
                    assert_eq!(earliest, 9_001);
                    Receipt::issue(&key, third.signed.header.state, 3, third.digest, earliest)
                },
            )
            .unwrap();
        assert_eq!(issued.receipt.accepted_at_unix_ms, 9_001);
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
            crate::coordinator::storage::flush(&store.db).unwrap();
            (kept, lost)
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.chunk(&record(kept, 1), 0).unwrap(), b"committed");
        assert!(store.chunk(&record(lost, 2), 0).is_err());
        assert_eq!(
            store
                .chunks
                .locations
                .scan_prefix(lost.0.to_be_bytes())
                .count(),
            0
        );
        assert!(!store.chunks.path(lost).exists());
        assert_eq!(store.uploads.len(), 0);
    }
}
