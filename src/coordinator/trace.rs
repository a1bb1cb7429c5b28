//! The custody trail of one item key across every stored snapshot, with the
//! evidence that each row was signed by its state.
//!
//! For every stored snapshot of every state, the key's rows are found by
//! binary search ([`SnapshotLookup`]); for each row the trail keeps the signed
//! header, the leaf encoding and a Merkle inclusion proof that leads from the
//! leaf to the header's `items_root`. Anyone holding the states' public keys
//! can check an entry without trusting the coordinator (see
//! [`crate::evidence`]).
//!
//! # Cost
//! Finding the rows costs one binary search per stored snapshot (one chunk
//! read each). An inclusion proof reads one block of 2^10 leaves (one chunk,
//! rarely two) and combines the roots of the snapshot's other blocks, which
//! the coordinator keeps when it accepts a snapshot (it computes them anyway
//! while checking the signed root): about 2^10 leaf hashes plus n / 2^10
//! node hashes per snapshot that lists the key, instead of rehashing all n
//! leaves. A snapshot without kept block roots is rehashed once, and its
//! block roots are kept then.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::coordinator::lookup::{CachePolicy, ChunkIndex, LookupError, read_piece};
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::alerts::AlertStoreError;
use crate::coordinator::storage::{SnapshotStore, StoreError, StoredSnapshot};
use crate::merkle::{self, BlockRoots, Hash, InclusionProof, MerkleBuilder, PROOF_BLOCK_LOG2};
use crate::reconcile::{ItemView, Line};
use crate::serial::ItemKey;
use crate::snapshot::leaf::{leaf_bounds, leaves};
use crate::state::StateCode;
use crate::trail::{Trail, TrailEntry};

/// Why a trace could not be produced. Every variant is a fault of the
/// coordinator's storage or state, not of the request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TraceError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// A stored snapshot no longer proves itself (its leaves do not hash to
    /// the signed root, or their count differs): the store is damaged.
    #[error("stored snapshot {state} {sequence} is damaged: {reason}")]
    Damaged {
        state: StateCode,
        sequence: u64,
        reason: String,
    },
}

/// Produces trails from the coordinator's store, alerts and engine.
pub(crate) struct Tracer {
    reconciler: Arc<Reconciler>,
}

impl Tracer {
    pub fn new(reconciler: Arc<Reconciler>) -> Tracer {
        Tracer { reconciler }
    }

    /// The trail of `key`. A key no state ever listed gives an empty trail.
    /// Blocks on storage reads: call it off the async runtime.
    pub fn trace(&self, key: &ItemKey) -> Result<Trail, TraceError> {
        let lookup = self.reconciler.lookup();
        let store = lookup.store().as_ref();
        let wanted = (key.model.as_str(), key.serial.as_str());
        let mut entries = Vec::new();
        for state in store.states()? {
            for snapshot in store.list(state, 1, usize::MAX)? {
                let index = lookup.index_of(&snapshot)?;
                let mut rows: Vec<(u64, Vec<u8>, Line)> = Vec::new();
                lookup.rows(&index, wanted, CachePolicy::ReadThrough, |row| {
                    rows.push((
                        row.position,
                        row.bytes.to_vec(),
                        ItemView::from(row.leaf).line(),
                    ));
                })?;
                if rows.is_empty() {
                    continue;
                }
                let positions: Vec<u64> = rows.iter().map(|(p, _, _)| *p).collect();
                let proofs = inclusion_proofs(store, &index, &positions)?;
                for ((_, leaf, line), proof) in rows.into_iter().zip(proofs) {
                    check_proof(&snapshot, &leaf, &proof)?;
                    entries.push(TrailEntry {
                        signed: snapshot.signed.clone(),
                        digest: snapshot.digest,
                        line,
                        leaf,
                        proof,
                    });
                }
            }
        }
        entries.sort_by_key(|e| {
            let h = &e.signed.header;
            (h.as_of_unix_ms, h.state, h.sequence, e.proof.leaf_index)
        });
        let alerts = self.reconciler.alerts().for_item(key)?;
        let custody = self.reconciler.with_engine(|engine| engine.custody(key))?;
        Ok(Trail {
            key: key.clone(),
            entries,
            alerts,
            custody,
        })
    }
}

fn damaged(snapshot: &StoredSnapshot, reason: impl Into<String>) -> TraceError {
    TraceError::Damaged {
        state: snapshot.signed.header.state,
        sequence: snapshot.signed.header.sequence,
        reason: reason.into(),
    }
}

/// A proof handed out must check against the signed root; one that does not
/// means the stored leaves changed since they were verified.
fn check_proof(
    snapshot: &StoredSnapshot,
    leaf: &[u8],
    proof: &InclusionProof,
) -> Result<(), TraceError> {
    let header = &snapshot.signed.header;
    if proof.tree_size == header.item_count
        && merkle::verify_inclusion(&merkle::leaf_hash(leaf), proof, &header.items_root)
    {
        Ok(())
    } else {
        Err(damaged(
            snapshot,
            format!(
                "the inclusion proof of leaf {} does not lead to the signed items root",
                proof.leaf_index
            ),
        ))
    }
}

/// The sibling subtrees one proof needs, sorted by start, with a builder for
/// each; they are disjoint and cover every leaf but the proven one.
struct ProofRanges {
    index: u64,
    ranges: Vec<(u64, u64)>,
    builders: Vec<MerkleBuilder>,
    /// First range that may still receive leaves.
    cursor: usize,
}

/// Inclusion proofs for the leaves at `positions` of a stored snapshot.
///
/// With the block roots kept when the snapshot was accepted, a proof reads
/// and hashes the one block of leaves that holds its leaf and combines the
/// other blocks' roots: about 2^10 leaf hashes and n / 2^10 node hashes.
/// Every proof is checked against the signed root before it is used. Without
/// usable block roots (a store written before they were kept, or a damaged
/// entry), every leaf is rehashed once for all positions, and the block
/// roots found on the way are kept for the next trace.
pub(crate) fn inclusion_proofs(
    store: &dyn SnapshotStore,
    index: &ChunkIndex,
    positions: &[u64],
) -> Result<Vec<InclusionProof>, TraceError> {
    let snapshot = index.snapshot();
    if let Some(blocks) = store.block_roots(&snapshot.digest)? {
        if let Some(proofs) = proofs_from_blocks(store, index, &blocks, positions)? {
            return Ok(proofs);
        }
        tracing::warn!(
            state = %snapshot.signed.header.state,
            sequence = snapshot.signed.header.sequence,
            "the kept Merkle block roots of this snapshot do not lead to its signed root; rehashing it"
        );
    }
    proofs_by_rehashing(store, snapshot, positions)
}

/// Proofs from kept block roots; `None` if they do not fit the snapshot or
/// a proof does not verify (the caller then rehashes).
fn proofs_from_blocks(
    store: &dyn SnapshotStore,
    index: &ChunkIndex,
    blocks: &BlockRoots,
    positions: &[u64],
) -> Result<Option<Vec<InclusionProof>>, TraceError> {
    let header = &index.snapshot().signed.header;
    let tree_size = header.item_count;
    // The rows of one key are adjacent, so usually all in one block.
    let mut loaded: Option<((u64, u64), Vec<Hash>)> = None;
    let mut proofs = Vec::with_capacity(positions.len());
    for &position in positions {
        let range = blocks.block_of(position, tree_size);
        let own = match loaded {
            Some((r, ref hashes)) if r == range => hashes,
            _ => &loaded.insert((range, leaf_hashes(store, index, range)?)).1,
        };
        let Some(proof) = blocks.proof(tree_size, position, own) else {
            return Ok(None);
        };
        let leaf = &own[(position - range.0) as usize];
        if !merkle::verify_inclusion(leaf, &proof, &header.items_root) {
            return Ok(None);
        }
        proofs.push(proof);
    }
    Ok(Some(proofs))
}

/// The leaf hashes of positions `[start, end)` of a stored snapshot, reading
/// only the pieces that hold them (for a proof block, usually one piece).
fn leaf_hashes(
    store: &dyn SnapshotStore,
    index: &ChunkIndex,
    (start, end): (u64, u64),
) -> Result<Vec<Hash>, TraceError> {
    let snapshot = index.snapshot();
    let starts = index.starts();
    let first = starts
        .partition_point(|c| c.first_leaf <= start)
        .saturating_sub(1);
    let mut hashes = Vec::with_capacity(end.saturating_sub(start) as usize);
    for (piece, c) in starts.iter().enumerate().skip(first) {
        if c.first_leaf >= end {
            break;
        }
        let bytes = read_piece(store, index, piece)?;
        let (mut at, mut position) = (0, c.first_leaf);
        while at < bytes.len() && position < end {
            let len = leaf_bounds(&bytes[at..])
                .map_err(|e| {
                    damaged(
                        snapshot,
                        format!("chunk {} has an unreadable leaf: {e}", c.chunk),
                    )
                })?
                .len;
            if position >= start {
                hashes.push(merkle::leaf_hash(&bytes[at..at + len]));
            }
            at += len;
            position += 1;
        }
    }
    if hashes.len() as u64 != end - start {
        return Err(damaged(
            snapshot,
            format!("leaves {start} to {end} are not all stored"),
        ));
    }
    Ok(hashes)
}

/// [`merkle::inclusion_proof_with`] asks for the roots of the sibling
/// subtrees. Their ranges depend only on the position and the tree size, so
/// they are collected first; then every leaf is read and hashed once, in
/// order, and pushed into the builder of the range holding it; then the
/// proofs are assembled from those roots. Memory stays O(log n) per proof;
/// time is O(n) leaf hashes for all positions together.
fn proofs_by_rehashing(
    store: &dyn SnapshotStore,
    snapshot: &StoredSnapshot,
    positions: &[u64],
) -> Result<Vec<InclusionProof>, TraceError> {
    let tree_size = snapshot.signed.header.item_count;
    let mut pending = Vec::with_capacity(positions.len());
    for &index in positions {
        let mut ranges = Vec::new();
        let planned = merkle::inclusion_proof_with(tree_size, index, |start, end| {
            ranges.push((start, end));
            Ok::<Hash, Infallible>([0; 32])
        });
        match planned {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(damaged(
                    snapshot,
                    format!("leaf {index} is beyond the signed item count {tree_size}"),
                ));
            }
            Err(never) => match never {},
        }
        ranges.sort_unstable();
        pending.push(ProofRanges {
            index,
            builders: vec![MerkleBuilder::new(); ranges.len()],
            ranges,
            cursor: 0,
        });
    }

    // The block roots, kept for the next trace once they check out.
    let mut whole = MerkleBuilder::new();
    let mut block_roots = Vec::new();
    let mut position = 0u64;
    for (number, chunk) in (0u32..).zip(store.chunks(snapshot)?) {
        let chunk = chunk?;
        for leaf in leaves(&chunk) {
            let (_, bytes) = leaf.map_err(|e| {
                damaged(
                    snapshot,
                    format!("chunk {number} has an unreadable leaf: {e}"),
                )
            })?;
            let hash = merkle::leaf_hash(bytes);
            if let Some(root) = whole.push_leaf_hash_in_blocks(hash, PROOF_BLOCK_LOG2) {
                block_roots.push(root);
            }
            for p in &mut pending {
                while p.ranges.get(p.cursor).is_some_and(|r| r.1 <= position) {
                    p.cursor += 1;
                }
                if let Some(r) = p.ranges.get(p.cursor)
                    && r.0 <= position
                {
                    p.builders[p.cursor].push_leaf_hash(hash);
                }
            }
            position += 1;
        }
    }
    if position != tree_size {
        return Err(damaged(
            snapshot,
            format!("it holds {position} leaves but its header signs {tree_size}"),
        ));
    }
    if whole.root() == snapshot.signed.header.items_root {
        block_roots.extend(whole.partial_block_root(PROOF_BLOCK_LOG2));
        let blocks = BlockRoots {
            log2: PROOF_BLOCK_LOG2,
            roots: block_roots,
        };
        if let Err(e) = store.put_block_roots(&snapshot.digest, &blocks) {
            tracing::warn!(error = %e, "could not keep a snapshot's Merkle block roots");
        }
    }

    let mut proofs = Vec::with_capacity(pending.len());
    for p in pending {
        let roots: BTreeMap<(u64, u64), Hash> = p
            .ranges
            .iter()
            .copied()
            .zip(p.builders.iter().map(MerkleBuilder::root))
            .collect();
        let proof = merkle::inclusion_proof_with(tree_size, p.index, |start, end| {
            roots
                .get(&(start, end))
                .copied()
                .ok_or_else(|| damaged(snapshot, "a planned subtree root is missing"))
        })?
        .ok_or_else(|| damaged(snapshot, "leaf index out of range"))?;
        proofs.push(proof);
    }
    Ok(proofs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::storage::SledStore;
    use crate::coordinator::storage::test_support::commit_first_snapshot;
    use crate::item::{Item, Status};
    use crate::serial::CanonicalRule;

    /// Stores a snapshot of `n` items cut into chunks of `per_chunk` leaves.
    fn stored(store: &SledStore, n: usize, per_chunk: usize) -> StoredSnapshot {
        let rule = CanonicalRule::default();
        let items: Vec<Item> = (0..n)
            .map(|i| {
                Item::new(
                    "9M39",
                    &format!("S{:03}", i / 2),
                    Status::InService,
                    "",
                    None,
                    &rule,
                )
                .unwrap()
            })
            .collect();
        commit_first_snapshot(store, StateCode::parse("KAZ").unwrap(), items, per_chunk)
    }

    fn leaf_hashes_of(store: &SledStore, snapshot: &StoredSnapshot) -> Vec<Hash> {
        store
            .chunks(snapshot)
            .unwrap()
            .flat_map(|c| {
                leaves(&c.unwrap())
                    .map(|l| merkle::leaf_hash(l.unwrap().1))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn assert_reference_proofs(
        proofs: &[InclusionProof],
        hashes: &[Hash],
        root: &Hash,
        case: &str,
    ) {
        assert_eq!(proofs.len(), hashes.len());
        for (i, proof) in proofs.iter().enumerate() {
            assert_eq!(
                Some(proof.clone()),
                merkle::inclusion_proof(hashes, i as u64),
                "{case}, leaf {i}"
            );
            assert!(merkle::verify_inclusion(&hashes[i], proof, root));
        }
    }

    /// Proofs equal the reference proofs from all leaf hashes, for every
    /// position, across tree shapes and chunkings: by rehashing (no block
    /// roots kept), then from the block roots that rehashing kept, then from
    /// small blocks (so that proofs span several blocks and chunks).
    #[test]
    fn proofs_equal_reference_proofs_with_and_without_block_roots() {
        for (n, per_chunk) in [(1, 1), (2, 1), (5, 2), (6, 4), (13, 3), (32, 5), (33, 32)] {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path()).unwrap();
            let snapshot = stored(&store, n, per_chunk);
            let root = snapshot.signed.header.items_root;
            let hashes = leaf_hashes_of(&store, &snapshot);
            let index = ChunkIndex::read(&store, &snapshot).unwrap();
            let positions: Vec<u64> = (0..n as u64).collect();
            assert_eq!(store.block_roots(&snapshot.digest).unwrap(), None);

            let rehashed = inclusion_proofs(&store, &index, &positions).unwrap();
            assert_reference_proofs(&rehashed, &hashes, &root, &format!("rehashed, n = {n}"));
            let kept = store.block_roots(&snapshot.digest).unwrap();
            assert_eq!(
                kept,
                Some(BlockRoots::of_leaf_hashes(&hashes, PROOF_BLOCK_LOG2))
            );

            let from_kept = inclusion_proofs(&store, &index, &positions).unwrap();
            assert_reference_proofs(&from_kept, &hashes, &root, &format!("kept roots, n = {n}"));

            for log2 in 0..3 {
                let small = BlockRoots::of_leaf_hashes(&hashes, log2);
                store.put_block_roots(&snapshot.digest, &small).unwrap();
                let proofs = inclusion_proofs(&store, &index, &positions).unwrap();
                assert_reference_proofs(
                    &proofs,
                    &hashes,
                    &root,
                    &format!("2^{log2} blocks, n = {n}"),
                );
                assert_eq!(store.block_roots(&snapshot.digest).unwrap(), Some(small));
            }
        }
    }

    /// Wrong kept block roots never give a wrong proof: the proofs are
    /// checked, the snapshot is rehashed, and the kept roots are repaired.
    #[test]
    fn wrong_block_roots_are_detected_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let snapshot = stored(&store, 40, 7);
        let hashes = leaf_hashes_of(&store, &snapshot);
        let index = ChunkIndex::read(&store, &snapshot).unwrap();
        let mut wrong = BlockRoots::of_leaf_hashes(&hashes, 2);
        wrong.roots[3][0] ^= 1;
        store.put_block_roots(&snapshot.digest, &wrong).unwrap();
        let positions: Vec<u64> = (0..40).collect();
        let proofs = inclusion_proofs(&store, &index, &positions).unwrap();
        assert_reference_proofs(
            &proofs,
            &hashes,
            &snapshot.signed.header.items_root,
            "repaired",
        );
        assert_eq!(
            store.block_roots(&snapshot.digest).unwrap(),
            Some(BlockRoots::of_leaf_hashes(&hashes, PROOF_BLOCK_LOG2))
        );
    }

    /// Leaves missing from storage are reported as damage, not as a proof.
    #[test]
    fn a_short_snapshot_is_reported_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut snapshot = stored(&store, 6, 2);
        snapshot.chunk_count = 2; // as if the last chunk were lost
        let index = ChunkIndex::read(&store, &snapshot).unwrap();
        let err = inclusion_proofs(&store, &index, &[1]).unwrap_err();
        assert!(
            matches!(err, TraceError::Damaged { .. }) && err.to_string().contains("4 leaves"),
            "{err}"
        );
    }
}
