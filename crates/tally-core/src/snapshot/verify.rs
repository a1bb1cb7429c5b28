//! Streaming verification of a snapshot's items against its signed header.
//!
//! The coordinator feeds chunks as they arrive; memory stays O(log n) for the
//! tree plus one leaf, whatever the snapshot size.

use crate::merkle::{BlockRoots, MerkleBuilder, PROOF_BLOCK_LOG2, leaf_hash};
use crate::serial::CanonicalRule;

use super::SnapshotHeader;
use super::leaf::{LeafError, LeafRef, compare_leaves};

/// Why a stream of items does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("item {index}: {source}")]
    Leaf {
        index: u64,
        #[source]
        source: LeafError,
    },
    #[error(
        "item {index} ({key}) is out of order: items must be sorted by canonical model, canonical serial, then leaf bytes (docs/protocol.md §2)"
    )]
    OutOfOrder { index: u64, key: String },
    #[error("more items than the {declared} the header declares")]
    TooManyItems { declared: u64 },
    #[error("the header declares {declared} items but {received} arrived")]
    CountMismatch { declared: u64, received: u64 },
    #[error("the items' Merkle root {computed} does not match the signed items_root {declared}")]
    RootMismatch { declared: String, computed: String },
}

/// Checks leaves chunk by chunk: structure, canonical forms, order, count, root.
#[derive(Debug)]
pub struct ItemStreamVerifier {
    declared_count: u64,
    declared_root: crate::merkle::Hash,
    rule: CanonicalRule,
    tree: MerkleBuilder,
    /// Roots of the complete blocks of 2^PROOF_BLOCK_LOG2 leaves so far,
    /// kept with the stored snapshot so that inclusion proofs need not
    /// rehash it (see the coordinator's trace module).
    block_roots: Vec<crate::merkle::Hash>,
    /// The last leaf of the previous chunk, for the order check across chunks.
    last_leaf: Vec<u8>,
}

impl ItemStreamVerifier {
    pub fn new(header: &SnapshotHeader, rule: CanonicalRule) -> Self {
        ItemStreamVerifier {
            declared_count: header.item_count,
            declared_root: header.items_root,
            rule,
            tree: MerkleBuilder::new(),
            block_roots: Vec::new(),
            last_leaf: Vec::new(),
        }
    }

    /// Number of leaves accepted so far.
    pub fn count(&self) -> u64 {
        self.tree.len()
    }

    /// Verifies one chunk of whole leaves; returns how many it held.
    pub fn push_chunk(&mut self, chunk: &[u8]) -> Result<u64, VerifyError> {
        let before = self.tree.len();
        let mut previous: Option<(LeafRef<'_>, &[u8])> = None;
        let carried = std::mem::take(&mut self.last_leaf);
        if !carried.is_empty() {
            // Parsed before; cannot fail.
            if let Ok((leaf, len)) = LeafRef::parse(&carried) {
                previous = Some((leaf, &carried[..len]));
            }
        }
        let mut at = 0;
        while at < chunk.len() {
            let index = self.tree.len();
            if index >= self.declared_count {
                return Err(VerifyError::TooManyItems {
                    declared: self.declared_count,
                });
            }
            let (leaf, len) = LeafRef::parse(&chunk[at..])
                .map_err(|source| VerifyError::Leaf { index, source })?;
            let bytes = &chunk[at..at + len];
            leaf.check(&self.rule)
                .map_err(|source| VerifyError::Leaf { index, source })?;
            if let Some((prev, prev_bytes)) = previous
                && compare_leaves(&prev, prev_bytes, &leaf, bytes).is_gt()
            {
                return Err(VerifyError::OutOfOrder {
                    index,
                    key: format!("{}/{}", leaf.canonical_model, leaf.canonical_serial),
                });
            }
            if let Some(root) = self
                .tree
                .push_leaf_hash_in_blocks(leaf_hash(bytes), PROOF_BLOCK_LOG2)
            {
                self.block_roots.push(root);
            }
            previous = Some((leaf, bytes));
            at += len;
        }
        self.last_leaf = match previous {
            Some((_, bytes)) => bytes.to_vec(),
            None => carried,
        };
        Ok(self.tree.len() - before)
    }

    /// The roots of the blocks of 2^[`PROOF_BLOCK_LOG2`] leaves received so
    /// far, the last one possibly partial (meaningful once
    /// [`ItemStreamVerifier::finish`] has passed).
    pub fn block_roots(&self) -> BlockRoots {
        let mut roots = self.block_roots.clone();
        roots.extend(self.tree.partial_block_root(PROOF_BLOCK_LOG2));
        BlockRoots {
            log2: PROOF_BLOCK_LOG2,
            roots,
        }
    }

    /// Checks the count and the root once the stream has ended.
    pub fn finish(&self) -> Result<(), VerifyError> {
        let received = self.tree.len();
        if received != self.declared_count {
            return Err(VerifyError::CountMismatch {
                declared: self.declared_count,
                received,
            });
        }
        let computed = self.tree.root();
        if computed != self.declared_root {
            return Err(VerifyError::RootMismatch {
                declared: hex::encode(self.declared_root),
                computed: hex::encode(computed),
            });
        }
        Ok(())
    }
}
