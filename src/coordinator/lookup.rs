//! Finding an item key's rows in stored snapshots, without reading them whole.
//!
//! A stored snapshot is a list of chunks of leaves in the defined order
//! (docs/protocol.md §2.5: by canonical model, then canonical serial). Its
//! [`ChunkIndex`] cuts the chunks into *pieces*: one starts at every chunk
//! and at every leaf position that is a multiple of 2^[`PIECE_LOG2`], and
//! the index records, for each piece, its chunk, its byte offset there, the
//! position of its first leaf and that leaf's key. A lookup binary-searches
//! the index for the last piece that starts before the key, reads just that
//! piece's bytes, and binary-searches inside it; the rows of one key may run
//! on into the following pieces.
//!
//! One lookup therefore reads about 2^10 leaves (60–100 KiB) instead of a
//! whole chunk (1 MiB) or snapshot. Both the reconciler (evidence lines for
//! alerts) and the trace use it; the trace also reads the piece that starts
//! a Merkle proof block (see `crate::coordinator::trace`), since pieces start at the
//! same positions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::coordinator::storage::{SnapshotStore, StoreError, StoredSnapshot};
use crate::snapshot::LeafRef;
use crate::snapshot::leaf::{LeafError, leaf_bounds, leaves};
use crate::state::StateCode;

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored chunk does not parse. Snapshots are verified before they are
    /// stored, so this means the store is damaged; retrying does not help.
    #[error("stored snapshot {state} {sequence}, chunk {chunk}: unreadable leaf: {source}")]
    BadLeaf {
        state: StateCode,
        sequence: u64,
        chunk: u32,
        #[source]
        source: LeafError,
    },
}

/// Leaves per piece, as a power of two (equal to the Merkle proof block
/// size, so that a proof block is read as one piece).
pub(crate) const PIECE_LOG2: u32 = crate::merkle::PROOF_BLOCK_LOG2;

/// Where one piece of a stored snapshot starts: a non-empty run of leaves
/// inside one chunk (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkStart {
    /// The chunk's number in the store.
    pub chunk: u32,
    /// Byte offset of the piece's first leaf inside the chunk.
    pub offset: u32,
    /// Position of the piece's first leaf among all the snapshot's leaves.
    pub first_leaf: u64,
    /// Canonical model and serial of the piece's first leaf.
    pub first_key: (String, String),
}

/// A stored snapshot and where each of its chunks starts, in order.
#[derive(Debug, Clone)]
pub struct ChunkIndex {
    snapshot: StoredSnapshot,
    starts: Vec<ChunkStart>,
}

impl ChunkIndex {
    /// An index from piece starts gathered while reading the snapshot
    /// (the reconciler parses every leaf anyway). `starts` must be in leaf
    /// order, begin a piece at every non-empty chunk, and list only
    /// non-empty pieces.
    pub fn new(snapshot: StoredSnapshot, starts: Vec<ChunkStart>) -> ChunkIndex {
        ChunkIndex { snapshot, starts }
    }

    /// Reads every chunk of `snapshot` once to build its index.
    pub fn read(
        store: &dyn SnapshotStore,
        snapshot: &StoredSnapshot,
    ) -> Result<ChunkIndex, LookupError> {
        Self::read_with_pieces(store, snapshot, PIECE_LOG2)
    }

    /// [`ChunkIndex::read`] with pieces of 2^`piece_log2` leaves (tests use
    /// small ones).
    pub(crate) fn read_with_pieces(
        store: &dyn SnapshotStore,
        snapshot: &StoredSnapshot,
        piece_log2: u32,
    ) -> Result<ChunkIndex, LookupError> {
        let mut starts = PieceStarts::new(piece_log2);
        for (number, chunk) in (0u32..).zip(store.chunks(snapshot)?) {
            let chunk = chunk?;
            let mut offset = 0;
            for leaf in leaves(&chunk) {
                let (leaf, bytes) = leaf.map_err(|source| bad_leaf(snapshot, number, source))?;
                starts.leaf(number, offset, &leaf);
                offset += bytes.len();
            }
        }
        Ok(ChunkIndex::new(snapshot.clone(), starts.finish()))
    }

    pub fn snapshot(&self) -> &StoredSnapshot {
        &self.snapshot
    }

    pub fn starts(&self) -> &[ChunkStart] {
        &self.starts
    }

    fn id(&self) -> (StateCode, u64) {
        let h = &self.snapshot.signed.header;
        (h.state, h.sequence)
    }
}

/// Whether a piece starts at leaf `position` even inside a chunk.
pub(crate) fn starts_piece(position: u64, piece_log2: u32) -> bool {
    position.trailing_zeros() >= piece_log2
}

/// Collects the piece starts of a snapshot while its leaves are walked in
/// order (by [`ChunkIndex::read`], and by the reconciler, which parses every
/// leaf anyway).
pub(crate) struct PieceStarts {
    piece_log2: u32,
    position: u64,
    starts: Vec<ChunkStart>,
}

impl PieceStarts {
    pub fn new(piece_log2: u32) -> PieceStarts {
        PieceStarts {
            piece_log2,
            position: 0,
            starts: Vec::new(),
        }
    }

    /// The next leaf: it sits at byte `offset` of chunk `chunk`.
    pub fn leaf(&mut self, chunk: u32, offset: usize, leaf: &LeafRef<'_>) {
        if offset == 0 || starts_piece(self.position, self.piece_log2) {
            self.starts.push(ChunkStart {
                chunk,
                offset: offset as u32,
                first_leaf: self.position,
                first_key: owned_key(leaf),
            });
        }
        self.position += 1;
    }

    pub fn finish(self) -> Vec<ChunkStart> {
        self.starts
    }
}

/// The piece starts of `snapshot` as bytes, to keep them in the store: the
/// piece size ([`PIECE_LOG2`], u8), the snapshot's item count (u64) and
/// chunk count (u32), the number of pieces (u32), then per piece the chunk
/// (u32), the byte offset (u32), the first leaf's position (u64), and the
/// first key's canonical model and serial, each as a u16 length and its
/// bytes; integers little-endian.
pub(crate) fn encode_starts(snapshot: &StoredSnapshot, starts: &[ChunkStart]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + starts.len() * 32);
    out.push(PIECE_LOG2 as u8);
    out.extend_from_slice(&snapshot.signed.header.item_count.to_le_bytes());
    out.extend_from_slice(&snapshot.chunk_count.to_le_bytes());
    out.extend_from_slice(&(starts.len() as u32).to_le_bytes());
    for s in starts {
        out.extend_from_slice(&s.chunk.to_le_bytes());
        out.extend_from_slice(&s.offset.to_le_bytes());
        out.extend_from_slice(&s.first_leaf.to_le_bytes());
        for part in [&s.first_key.0, &s.first_key.1] {
            // Canonical keys come from leaves, whose strings have u16 lengths.
            let bytes = &part.as_bytes()[..part.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// The inverse of [`encode_starts`] for `snapshot`. `None` unless the bytes
/// were written for this snapshot's item and chunk counts and this piece
/// size, and the starts have the shape [`PieceStarts`] gives them: the
/// first at leaf 0, offset 0; a new chunk at offset 0; further pieces of a
/// chunk at multiples of the piece size; leaves, offsets and keys in order.
pub(crate) fn decode_starts(
    mut bytes: &[u8],
    snapshot: &StoredSnapshot,
) -> Option<Vec<ChunkStart>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn string(bytes: &mut &[u8]) -> Option<String> {
        let len = u16::from_le_bytes(take(bytes, 2)?.try_into().ok()?);
        String::from_utf8(take(bytes, len as usize)?.to_vec()).ok()
    }
    let piece_log2 = u32::from(*take(&mut bytes, 1)?.first()?);
    let item_count = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
    let chunk_count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
    if piece_log2 != PIECE_LOG2
        || item_count != snapshot.signed.header.item_count
        || chunk_count != snapshot.chunk_count
    {
        return None;
    }
    let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
    let mut out: Vec<ChunkStart> = Vec::new();
    for _ in 0..count {
        let start = ChunkStart {
            chunk: u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?),
            offset: u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?),
            first_leaf: u64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?),
            first_key: (string(&mut bytes)?, string(&mut bytes)?),
        };
        let fits = start.chunk < chunk_count && start.first_leaf < item_count;
        let in_order = match out.last() {
            None => start.first_leaf == 0 && start.offset == 0,
            Some(last) => {
                let next_chunk = last.chunk < start.chunk && start.offset == 0;
                let same_chunk = last.chunk == start.chunk
                    && last.offset < start.offset
                    && starts_piece(start.first_leaf, piece_log2);
                last.first_leaf < start.first_leaf
                    && last.first_key <= start.first_key
                    && (next_chunk || same_chunk)
            }
        };
        if !fits || !in_order {
            return None;
        }
        out.push(start);
    }
    (bytes.is_empty() && (count > 0) == (item_count > 0)).then_some(out)
}

pub(crate) fn owned_key(leaf: &LeafRef<'_>) -> (String, String) {
    (
        leaf.canonical_model.to_string(),
        leaf.canonical_serial.to_string(),
    )
}

fn bad_leaf(snapshot: &StoredSnapshot, chunk: u32, source: LeafError) -> LookupError {
    LookupError::BadLeaf {
        state: snapshot.signed.header.state,
        sequence: snapshot.signed.header.sequence,
        chunk,
        source,
    }
}

/// The bytes of piece number `piece` of `index`: from its offset to the
/// next piece's offset in the same chunk, or to the chunk's end.
pub(crate) fn read_piece(
    store: &dyn SnapshotStore,
    index: &ChunkIndex,
    piece: usize,
) -> Result<Vec<u8>, LookupError> {
    let start = &index.starts[piece];
    let end = index
        .starts
        .get(piece + 1)
        .filter(|next| next.chunk == start.chunk)
        .map(|next| next.offset);
    Ok(store.chunk_range(&index.snapshot, start.chunk, start.offset, end)?)
}

/// A piece prepared once for lookups: its bytes and where each leaf starts.
struct DecodedChunk {
    bytes: Vec<u8>,
    /// Start offset of every leaf, then the chunk's length.
    bounds: Vec<usize>,
}

impl DecodedChunk {
    /// Finds the leaf starts from the length prefixes alone: the chunk was
    /// verified when its snapshot was accepted, and a lookup fully parses
    /// only the few leaves its binary search visits.
    fn decode(bytes: Vec<u8>) -> Result<DecodedChunk, LeafError> {
        let mut bounds = vec![0];
        let mut at = 0;
        while at < bytes.len() {
            at += leaf_bounds(&bytes[at..])?.len;
            bounds.push(at);
        }
        Ok(DecodedChunk { bytes, bounds })
    }

    fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Leaf `i` (which must be below `len()`) and its bytes.
    fn leaf(&self, i: usize) -> Result<(LeafRef<'_>, &[u8]), LeafError> {
        let bytes = &self.bytes[self.bounds[i]..self.bounds[i + 1]];
        LeafRef::parse(bytes).map(|(leaf, _)| (leaf, bytes))
    }
}

/// One row of a stored snapshot that lists the key looked up.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Position of the leaf among the snapshot's leaves (its Merkle leaf index).
    pub position: u64,
    pub leaf: LeafRef<'a>,
    /// The leaf encoding, exactly as signed.
    pub bytes: &'a [u8],
}

/// Whether a lookup keeps the chunks it decodes for later lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Keep them: reconciliation looks up many keys of the same few snapshots.
    Keep,
    /// Use cached chunks but add none: a trace visits every snapshot once,
    /// and would only push out the chunks reconciliation is working on.
    ReadThrough,
}

/// Decoded pieces kept at most (about 2^10 leaves, 60–100 KiB, each).
const CHUNK_CACHE: usize = 1024;

/// Key lookups over the stored snapshots: chunk indexes plus a small cache of
/// decoded chunks. Shared between the reconciler and the trace; every method
/// takes `&self` and is safe to call from several threads.
pub struct SnapshotLookup {
    store: Arc<dyn SnapshotStore>,
    indexes: Mutex<HashMap<(StateCode, u64), Arc<ChunkIndex>>>,
    cache: Mutex<ChunkCache>,
}

/// Decoded pieces by (state, sequence, piece number), least recently used
/// evicted first: lookups of one reconciliation cluster in a few chunks of
/// a few snapshots, so dropping everything when full (as a plain map would)
/// throws away the chunks about to be used again.
#[derive(Default)]
struct ChunkCache {
    /// Chunk and the tick of its last use.
    chunks: HashMap<(StateCode, u64, u32), (Arc<DecodedChunk>, u64)>,
    tick: u64,
}

impl ChunkCache {
    fn get(&mut self, id: &(StateCode, u64, u32)) -> Option<Arc<DecodedChunk>> {
        self.tick += 1;
        let tick = self.tick;
        self.chunks.get_mut(id).map(|(chunk, used)| {
            *used = tick;
            chunk.clone()
        })
    }

    fn insert(&mut self, id: (StateCode, u64, u32), chunk: Arc<DecodedChunk>) {
        if self.chunks.len() >= CHUNK_CACHE
            && let Some(oldest) = self
                .chunks
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id)
        {
            self.chunks.remove(&oldest);
        }
        self.tick += 1;
        self.chunks.insert(id, (chunk, self.tick));
    }
}

/// The maps behind these locks are only ever changed by single inserts and
/// clears, so a panic elsewhere cannot leave them inconsistent: a poisoned
/// lock is taken over rather than treated as an error.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SnapshotLookup {
    pub fn new(store: Arc<dyn SnapshotStore>) -> SnapshotLookup {
        SnapshotLookup {
            store,
            indexes: Mutex::new(HashMap::new()),
            cache: Mutex::new(ChunkCache::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn SnapshotStore> {
        &self.store
    }

    /// Records the index of a snapshot (replacing any earlier one).
    pub fn insert(&self, index: ChunkIndex) {
        lock(&self.indexes).insert(index.id(), Arc::new(index));
    }

    /// The index of the snapshot `state`/`sequence`, if one was recorded.
    pub(crate) fn indexed(&self, state: StateCode, sequence: u64) -> Option<Arc<ChunkIndex>> {
        lock(&self.indexes).get(&(state, sequence)).cloned()
    }

    /// Keeps the piece starts of an index in the store, so that after a
    /// restart it is read back instead of rebuilt from every leaf (record
    /// the index itself with [`SnapshotLookup::insert`]).
    pub(crate) fn insert_and_keep(&self, index: &ChunkIndex) -> Result<(), StoreError> {
        self.store.put_piece_starts(
            &index.snapshot.digest,
            &encode_starts(&index.snapshot, &index.starts),
        )
    }

    /// The index of `snapshot`: the recorded one, else the piece starts
    /// kept in the store, else read from the snapshot's leaves (and kept).
    pub(crate) fn index_of(
        &self,
        snapshot: &StoredSnapshot,
    ) -> Result<Arc<ChunkIndex>, LookupError> {
        let h = &snapshot.signed.header;
        if let Some(index) = self.indexed(h.state, h.sequence)
            && index.snapshot.digest == snapshot.digest
        {
            return Ok(index);
        }
        let kept = self
            .store
            .piece_starts(&snapshot.digest)?
            .and_then(|bytes| decode_starts(&bytes, snapshot));
        let index = match kept {
            Some(starts) => ChunkIndex::new(snapshot.clone(), starts),
            None => {
                let index = ChunkIndex::read(self.store.as_ref(), snapshot)?;
                self.insert_and_keep(&index)?;
                index
            }
        };
        let index = Arc::new(index);
        lock(&self.indexes).insert(index.id(), index.clone());
        Ok(index)
    }

    /// The index of the stored snapshot `state`/`sequence`, as
    /// [`SnapshotLookup::index_of`]; `None` if no such snapshot is stored.
    pub(crate) fn index_for(
        &self,
        state: StateCode,
        sequence: u64,
    ) -> Result<Option<Arc<ChunkIndex>>, LookupError> {
        if let Some(index) = self.indexed(state, sequence) {
            return Ok(Some(index));
        }
        match self.store.get(state, sequence)? {
            Some(snapshot) => self.index_of(&snapshot).map(Some),
            None => Ok(None),
        }
    }

    /// Piece number `piece` of the index, read and decoded (or cached).
    fn piece(
        &self,
        index: &ChunkIndex,
        piece: usize,
        policy: CachePolicy,
    ) -> Result<Arc<DecodedChunk>, LookupError> {
        let (state, sequence) = index.id();
        let id = (state, sequence, piece as u32);
        if let Some(c) = lock(&self.cache).get(&id) {
            return Ok(c);
        }
        let bytes = read_piece(self.store.as_ref(), index, piece)?;
        let number = index.starts[piece].chunk;
        let decoded = Arc::new(
            DecodedChunk::decode(bytes)
                .map_err(|source| bad_leaf(&index.snapshot, number, source))?,
        );
        if policy == CachePolicy::Keep {
            lock(&self.cache).insert(id, decoded.clone());
        }
        Ok(decoded)
    }

    /// Calls `visit` for every row of the indexed snapshot whose canonical
    /// key is `key` (canonical model, canonical serial), in snapshot order.
    pub fn rows(
        &self,
        index: &ChunkIndex,
        key: (&str, &str),
        policy: CachePolicy,
        mut visit: impl FnMut(Row<'_>),
    ) -> Result<(), LookupError> {
        let starts = &index.starts;
        // The last chunk starting before the key: its tail may hold the
        // first rows of the key even when the next chunk starts with it.
        let first = starts
            .partition_point(|s| (s.first_key.0.as_str(), s.first_key.1.as_str()) < key)
            .saturating_sub(1);
        for (c, start) in starts.iter().enumerate().skip(first) {
            let chunk = self.piece(index, c, policy)?;
            // First leaf whose key is not below `key`.
            let (mut lo, mut hi) = (0, chunk.len());
            let bad = |source| bad_leaf(&index.snapshot, start.chunk, source);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (leaf, _) = chunk.leaf(mid).map_err(bad)?;
                if leaf.key_strs() < key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            for i in lo..chunk.len() {
                let (leaf, bytes) = chunk.leaf(i).map_err(bad)?;
                if leaf.key_strs() != key {
                    return Ok(());
                }
                visit(Row {
                    position: start.first_leaf + i as u64,
                    leaf,
                    bytes,
                });
            }
            // This chunk ended at or before the key: go on only if the next
            // chunk can still start with it.
            match starts.get(c + 1) {
                Some(next) if (next.first_key.0.as_str(), next.first_key.1.as_str()) <= key => {}
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::storage::SledStore;
    use crate::coordinator::storage::test_support::commit_first_snapshot;
    use crate::item::{Item, Status};
    use crate::serial::CanonicalRule;

    /// Stores `serials` (model 9M39, each a row; repeats are duplicate rows)
    /// as one snapshot cut into chunks of `per_chunk` leaves.
    fn stored(store: &SledStore, serials: &[&str], per_chunk: usize) -> StoredSnapshot {
        let rule = CanonicalRule::default();
        let items: Vec<Item> = serials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Item::new("9M39", s, Status::InService, &format!("D{i}"), None, &rule).unwrap()
            })
            .collect();
        commit_first_snapshot(store, StateCode::parse("RUS").unwrap(), items, per_chunk)
    }

    /// Positions and bytes of every leaf with serial `serial`, by a plain scan.
    fn naive(store: &SledStore, snapshot: &StoredSnapshot, serial: &str) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut position = 0;
        for chunk in store.chunks(snapshot).unwrap() {
            for leaf in leaves(&chunk.unwrap()) {
                let (leaf, bytes) = leaf.unwrap();
                if leaf.key_strs() == ("9M39", serial) {
                    out.push((position, bytes.to_vec()));
                }
                position += 1;
            }
        }
        out
    }

    /// Every key, present or not, is found exactly where a full scan finds
    /// it, whatever the chunking: duplicates straddling chunk boundaries,
    /// keys at the first and last position, keys before and after all others.
    #[test]
    fn rows_agree_with_a_full_scan() {
        let serials = [
            "B", "B", "B", "C", "D", "D", "E", "F", "F", "F", "F", "F", "G", "H", "H",
        ];
        let probes = ["A", "B", "C", "CC", "D", "E", "F", "G", "H", "Z"];
        for per_chunk in [1, 2, 3, 4, 5, 7, 15] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SledStore::open(dir.path()).unwrap());
            let snapshot = stored(&store, &serials, per_chunk);
            let lookup = SnapshotLookup::new(store.clone());
            let index = lookup.index_of(&snapshot).unwrap();
            assert_eq!(index.starts().len(), serials.len().div_ceil(per_chunk));
            // Then with pieces of 1, 2 and 4 leaves inside the chunks.
            for piece_log2 in [None, Some(0), Some(1), Some(2)] {
                let index = match piece_log2 {
                    None => index.clone(),
                    Some(log2) => {
                        let pieces =
                            ChunkIndex::read_with_pieces(store.as_ref(), &snapshot, log2).unwrap();
                        let expected: usize = (0..serials.len() as u64)
                            .filter(|&p| p % per_chunk as u64 == 0 || starts_piece(p, log2))
                            .count();
                        assert_eq!(pieces.starts().len(), expected);
                        lookup.insert(pieces);
                        lookup.indexed(snapshot.signed.header.state, 1).unwrap()
                    }
                };
                let lookup = SnapshotLookup::new(store.clone());
                for policy in [CachePolicy::Keep, CachePolicy::ReadThrough] {
                    for serial in probes {
                        let mut found = Vec::new();
                        lookup
                            .rows(&index, ("9M39", serial), policy, |row| {
                                found.push((row.position, row.bytes.to_vec()))
                            })
                            .unwrap();
                        assert_eq!(
                            found,
                            naive(&store, &snapshot, serial),
                            "serial {serial}, {per_chunk} per chunk, pieces {piece_log2:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn index_of_reuses_a_recorded_index_and_reads_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path()).unwrap());
        let snapshot = stored(&store, &["A", "B", "C"], 2);
        let lookup = SnapshotLookup::new(store.clone());
        assert!(
            lookup
                .indexed(StateCode::parse("RUS").unwrap(), 1)
                .is_none()
        );
        let read = lookup.index_of(&snapshot).unwrap();
        assert_eq!(
            read.starts(),
            [
                ChunkStart {
                    chunk: 0,
                    offset: 0,
                    first_leaf: 0,
                    first_key: ("9M39".into(), "A".into())
                },
                ChunkStart {
                    chunk: 1,
                    offset: 0,
                    first_leaf: 2,
                    first_key: ("9M39".into(), "C".into())
                },
            ]
        );
        let again = lookup.index_of(&snapshot).unwrap();
        assert!(Arc::ptr_eq(&read, &again));

        // The starts were kept in the store: a new lookup (a restart) reads
        // them back, and damaged ones are rebuilt from the leaves.
        let kept = store.piece_starts(&snapshot.digest).unwrap().unwrap();
        assert_eq!(decode_starts(&kept, &snapshot).unwrap(), read.starts());
        let restarted = SnapshotLookup::new(store.clone());
        let from_store = restarted
            .index_for(StateCode::parse("RUS").unwrap(), 1)
            .unwrap()
            .unwrap();
        assert_eq!(from_store.starts(), read.starts());
        store
            .put_piece_starts(&snapshot.digest, &kept[..kept.len() - 1])
            .unwrap();
        let rebuilt = SnapshotLookup::new(store.clone())
            .index_of(&snapshot)
            .unwrap();
        assert_eq!(rebuilt.starts(), read.starts());
        assert_eq!(store.piece_starts(&snapshot.digest).unwrap().unwrap(), kept);
        assert!(
            SnapshotLookup::new(store.clone())
                .index_for(StateCode::parse("RUS").unwrap(), 2)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn piece_starts_of_another_shape_or_snapshot_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // The counts of a larger snapshot: 2,000 items in 2 chunks.
        let mut snapshot = stored(&store, &["A"], 1);
        snapshot.signed.header.item_count = 2_000;
        snapshot.chunk_count = 2;
        let start = |chunk, offset, first_leaf, serial: &str| ChunkStart {
            chunk,
            offset,
            first_leaf,
            first_key: ("9M39".into(), serial.into()),
        };
        let good = [
            start(0, 0, 0, "A"),
            start(0, 90, 1024, "B"),
            start(1, 0, 1500, "C"),
        ];
        let bytes = encode_starts(&snapshot, &good);
        assert_eq!(decode_starts(&bytes, &snapshot).unwrap(), good);
        for bad in [
            // keys out of order
            [
                start(0, 0, 0, "A"),
                start(0, 90, 1024, "C"),
                start(1, 0, 1500, "B"),
            ],
            // offsets not increasing inside a chunk
            [
                start(0, 0, 0, "A"),
                start(0, 0, 1024, "B"),
                start(1, 0, 1500, "C"),
            ],
            // a piece inside a chunk that is not at a multiple of the piece size
            [
                start(0, 0, 0, "A"),
                start(0, 90, 1000, "B"),
                start(1, 0, 1500, "C"),
            ],
            // a new chunk that does not start at offset 0
            [
                start(0, 0, 0, "A"),
                start(0, 90, 1024, "B"),
                start(1, 8, 1500, "C"),
            ],
            // not starting at leaf 0
            [
                start(0, 0, 1, "A"),
                start(0, 90, 1024, "B"),
                start(1, 0, 1500, "C"),
            ],
            // past the snapshot's chunks or items
            [
                start(0, 0, 0, "A"),
                start(0, 90, 1024, "B"),
                start(2, 0, 1500, "C"),
            ],
            [
                start(0, 0, 0, "A"),
                start(0, 90, 1024, "B"),
                start(1, 0, 2000, "C"),
            ],
        ] {
            let bytes = encode_starts(&snapshot, &bad);
            assert_eq!(decode_starts(&bytes, &snapshot), None, "{bad:?}");
        }
        let mut other = snapshot.clone();
        other.chunk_count = 3;
        assert_eq!(decode_starts(&bytes, &other), None, "another chunk count");
        other = snapshot.clone();
        other.signed.header.item_count = 3_000;
        assert_eq!(decode_starts(&bytes, &other), None, "another item count");
        for len in 0..bytes.len() {
            if let Some(starts) = decode_starts(&bytes[..len], &snapshot) {
                panic!("a cut at {len} decoded to {starts:?}");
            }
        }
    }
}
