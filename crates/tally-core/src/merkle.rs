//! Merkle tree hash (RFC 6962 §2.1 / RFC 9162 §2.1) over SHA-256, used to
//! commit to the items of a signed inventory snapshot.
//!
//! # Tree shape
//!
//! The Merkle Tree Hash `MTH` of a list of `n` leaves `D[0..n]` is
//!
//! * `n = 0`: `SHA-256()`, the hash of the empty string ([`empty_root`]);
//! * `n = 1`: `SHA-256(0x00 || D[0])`, the *leaf hash* ([`leaf_hash`]);
//! * `n > 1`: `SHA-256(0x01 || MTH(D[0..k]) || MTH(D[k..n]))`, the *node hash*
//!   ([`node_hash`]), where `k` is the largest power of two strictly less
//!   than `n`.
//!
//! So the left subtree of every node is perfect (a power of two leaves) and
//! at least as large as the right one; a tree that is not perfect leans to
//! the left, with its ragged edge on the right. This is the tree used by
//! Certificate Transparency, so the standard test vectors and third-party
//! verifiers apply unchanged.
//!
//! # Prefixes
//!
//! The one-byte prefixes `0x00` (leaf) and `0x01` (interior node) separate the
//! two kinds of preimage. Without them, an interior node's 64-byte preimage
//! `left || right` could be presented as a leaf, and a proof could claim a
//! "leaf" that is really a subtree (a second-preimage attack on the tree).
//! With them, a leaf hash can never equal a node hash unless SHA-256 collides.
//!
//! # Why streaming
//!
//! A snapshot may hold millions of items. [`MerkleBuilder`] computes the root
//! as items stream past, keeping only the roots of the perfect subtrees
//! completed so far — one per set bit of the leaf count, at most 64 hashes
//! (2 KiB) in a fixed array — and merging them like a binary counter. Memory
//! is therefore independent of the snapshot size, nothing is allocated per
//! leaf, and each item costs one leaf hash plus, amortised, one node hash. The
//! root is obtained by folding that stack right to left, which is exactly
//! `MTH` for every `n` (the largest perfect subtree is the left split, the
//! rest is the right subtree, recursively).
//!
//! # Inclusion proofs
//!
//! [`inclusion_proof_with`] produces the audit path of RFC 9162 §2.1.3.1 by
//! asking a callback for the roots of at most 64 subtrees, so storage can
//! answer from cached block roots instead of rehashing the snapshot.
//! [`verify_inclusion`] is the verification algorithm of RFC 9162 §2.1.3.2.
//!
//! A proof binds the leaf index, but it does not by itself bind the tree
//! size: the same path can verify for several tree sizes when the path has
//! the same shape. The root must therefore be trusted together with its tree
//! size (both signed in the snapshot head), and the verifier must take the
//! tree size from the signed statement, not from the proof.

use std::convert::Infallible;
use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash.
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
const NODE_PREFIX: u8 = 0x01;

/// Most subtrees the builder can hold: one per bit of a `u64` leaf count.
const MAX_DEPTH: usize = 64;

/// `SHA-256(0x00 || leaf)`.
#[inline]
#[must_use]
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([LEAF_PREFIX])
        .chain_update(leaf)
        .finalize()
        .into()
}

/// `SHA-256(0x01 || left || right)`.
#[inline]
#[must_use]
pub(crate) fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The root of the empty tree: `SHA-256()` (the hash of the empty string).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n`. Requires `n >= 2`.
#[inline]
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (n - 1).ilog2()
}

/// Streaming Merkle tree hash: memory O(log n), independent of the number of
/// leaves.
///
/// Leaves are pushed in order; [`MerkleBuilder::root`] returns `MTH` of the
/// leaves pushed so far at any point, without consuming the builder.
#[derive(Clone)]
pub struct MerkleBuilder {
    /// Roots of the completed perfect subtrees, largest (leftmost) first.
    /// Only the first `len.count_ones()` entries are meaningful; entry `i`
    /// covers 2^b leaves, where b is the i-th highest set bit of `len`.
    stack: [Hash; MAX_DEPTH],
    /// Number of leaves pushed.
    len: u64,
}

impl MerkleBuilder {
    /// An empty builder (its root is [`empty_root`]).
    #[must_use]
    pub fn new() -> Self {
        Self {
            stack: [[0u8; 32]; MAX_DEPTH],
            len: 0,
        }
    }

    /// Appends a leaf, hashing it with [`leaf_hash`].
    ///
    /// # Panics
    /// If `u64::MAX` leaves have already been pushed.
    #[inline]
    pub fn push_leaf(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Appends a leaf given by its leaf hash (`SHA-256(0x00 || leaf)`).
    ///
    /// The caller is responsible for passing a real leaf hash, not the leaf
    /// bytes' plain digest. One other input is sound: whole subtrees. If
    /// every hash pushed is the root of an aligned block of `2^b` leaves
    /// (all blocks full except possibly the last), the builder's root is the
    /// `MTH` of all those leaves, because every split of such a tree falls on
    /// a block boundary.
    ///
    /// # Panics
    /// If `u64::MAX` leaves have already been pushed.
    #[inline]
    pub fn push_leaf_hash(&mut self, h: Hash) {
        self.push_leaf_hash_in_blocks(h, u32::MAX);
    }

    /// [`MerkleBuilder::push_leaf_hash`], and if this leaf completes an
    /// aligned block of `2^block_log2` leaves, that block's root: it is one
    /// of the merges the push does anyway, so collecting block roots while
    /// building the root costs no extra hashing.
    ///
    /// # Panics
    /// If `u64::MAX` leaves have already been pushed.
    #[inline]
    pub fn push_leaf_hash_in_blocks(&mut self, h: Hash, block_log2: u32) -> Option<Hash> {
        assert!(self.len != u64::MAX, "MerkleBuilder: leaf count overflow");
        let mut block = (block_log2 == 0).then_some(h);
        // Binary-counter increment: every trailing one bit of `len` is a
        // perfect subtree of the same size as the carry, so merge them.
        let mut depth = self.len.count_ones() as usize;
        let mut carry = h;
        let mut n = self.len;
        let mut merges = 0;
        while n & 1 == 1 {
            depth -= 1;
            carry = node_hash(&self.stack[depth], &carry);
            n >>= 1;
            merges += 1;
            if merges == block_log2 {
                block = Some(carry);
            }
        }
        // `depth <= 63` here: it equals count_ones(len) - trailing_ones(len),
        // and `len != u64::MAX`.
        self.stack[depth] = carry;
        self.len += 1;
        block
    }

    /// The root of the leaves after the last complete aligned block of
    /// `2^block_log2` leaves; `None` if there are none (the count is a
    /// multiple of the block size). Together with the roots returned by
    /// [`MerkleBuilder::push_leaf_hash_in_blocks`] these are the roots of
    /// all blocks, the last one possibly partial.
    #[must_use]
    pub fn partial_block_root(&self, block_log2: u32) -> Option<Hash> {
        let rest = if block_log2 >= 64 {
            self.len
        } else {
            self.len & ((1u64 << block_log2) - 1)
        };
        let depth = self.len.count_ones() as usize;
        let entries = &self.stack[depth - rest.count_ones() as usize..depth];
        let (last, left) = entries.split_last()?;
        Some(
            left.iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        )
    }

    /// Number of leaves pushed so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if no leaf has been pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `MTH` of the leaves pushed so far. Does not consume the builder; costs
    /// at most 63 node hashes.
    #[must_use]
    pub fn root(&self) -> Hash {
        let depth = self.len.count_ones() as usize;
        match self.stack[..depth].split_last() {
            None => empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

impl Default for MerkleBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MerkleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let depth = self.len.count_ones() as usize;
        let subtrees: Vec<String> = self.stack[..depth].iter().map(hex::encode).collect();
        f.debug_struct("MerkleBuilder")
            .field("len", &self.len)
            .field("subtrees", &subtrees)
            .finish()
    }
}

/// `MTH` over leaves that are already leaf-hashed (`SHA-256(0x00 || leaf)`).
#[must_use]
pub(crate) fn root_of_leaf_hashes(hashes: &[Hash]) -> Hash {
    let mut builder = MerkleBuilder::new();
    for h in hashes {
        builder.push_leaf_hash(*h);
    }
    builder.root()
}

/// Block size (as a power of two) of the [`BlockRoots`] kept per stored
/// snapshot: a proof then rehashes one block of leaves and combines the
/// roots of the other blocks, about `2^b + n / 2^b` hashes instead of `2n`.
/// 2^10 balances the two terms for a million leaves (about 2,000 hashes and
/// 31 KiB of roots per snapshot).
pub const PROOF_BLOCK_LOG2: u32 = 10;

/// The number of blocks of `2^block_log2` leaves (the last possibly partial)
/// in a tree of `tree_size` leaves.
#[must_use]
pub fn block_count(tree_size: u64, block_log2: u32) -> u64 {
    if block_log2 >= 64 {
        return u64::from(tree_size > 0);
    }
    tree_size.div_ceil(1u64 << block_log2)
}

/// The roots of the aligned blocks of `2^log2` leaves of one tree, the last
/// block possibly partial. Kept per stored snapshot so that an inclusion
/// proof needs the leaves of one block only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRoots {
    pub log2: u32,
    pub roots: Vec<Hash>,
}

impl BlockRoots {
    /// The block roots of the tree over `leaf_hashes`.
    #[must_use]
    pub fn of_leaf_hashes(leaf_hashes: &[Hash], log2: u32) -> BlockRoots {
        let mut builder = MerkleBuilder::new();
        let mut roots: Vec<Hash> = leaf_hashes
            .iter()
            .filter_map(|h| builder.push_leaf_hash_in_blocks(*h, log2))
            .collect();
        roots.extend(builder.partial_block_root(log2));
        BlockRoots { log2, roots }
    }

    /// The leaf positions `[start, end)` of the block that holds `index`.
    #[must_use]
    pub fn block_of(&self, index: u64, tree_size: u64) -> (u64, u64) {
        let size = 1u64 << self.log2.min(63);
        let start = index & !(size - 1);
        (start, start.saturating_add(size).min(tree_size))
    }

    /// `log2` as one byte, then the roots.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 * self.roots.len());
        out.push(self.log2 as u8);
        for root in &self.roots {
            out.extend_from_slice(root);
        }
        out
    }

    /// The inverse of [`BlockRoots::encode`]; `None` if malformed.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<BlockRoots> {
        let (&log2, rest) = bytes.split_first()?;
        if log2 >= 63 || rest.len() % 32 != 0 {
            return None;
        }
        let roots = rest
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).ok())
            .collect::<Option<Vec<Hash>>>()?;
        Some(BlockRoots {
            log2: u32::from(log2),
            roots,
        })
    }

    /// Inclusion proof for leaf `index` of the tree of `tree_size` leaves
    /// these are the block roots of, given the leaf hashes of the block that
    /// holds `index` ([`BlockRoots::block_of`]).
    ///
    /// No other leaf is needed: every subtree a proof asks for either is
    /// whole blocks (it starts on a block boundary and ends on one or at the
    /// tree's end) or lies inside the leaf's own block (see
    /// [`inclusion_proof_with`] for the shapes). Returns `None` if `index` is
    /// out of range or the inputs do not have the sizes this tree needs.
    #[must_use]
    pub fn proof(&self, tree_size: u64, index: u64, own_block: &[Hash]) -> Option<InclusionProof> {
        if index >= tree_size
            || self.log2 >= 63
            || self.roots.len() as u64 != block_count(tree_size, self.log2)
        {
            return None;
        }
        let size = 1u64 << self.log2;
        let (base, own_end) = self.block_of(index, tree_size);
        if own_block.len() as u64 != own_end - base {
            return None;
        }
        inclusion_proof_with(tree_size, index, |start, end| {
            // Subtrees are never empty, so this is at least one block.
            let whole_blocks = start % size == 0 && (end % size == 0 || end == tree_size);
            if whole_blocks {
                let first = (start / size) as usize;
                let last = end.div_ceil(size) as usize;
                Ok(root_of_leaf_hashes(&self.roots[first..last]))
            } else if start >= base && end <= own_end {
                Ok(root_of_leaf_hashes(
                    &own_block[(start - base) as usize..(end - base) as usize],
                ))
            } else {
                Err(())
            }
        })
        .ok()
        .flatten()
    }
}

/// An inclusion proof (audit path) for one leaf, RFC 9162 §2.1.3.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Index of the leaf, `0 <= leaf_index < tree_size`.
    pub leaf_index: u64,
    /// Number of leaves in the tree whose root the proof leads to.
    pub tree_size: u64,
    /// Sibling subtree roots, from the leaf's sibling up to the root's child.
    pub path: Vec<Hash>,
}

/// Inclusion proof (RFC 9162 §2.1.3.1 PATH) generated with O(log n) calls of
/// `subtree_root(start, end)`, which must return `MTH` of leaves
/// `[start, end)`. This lets storage back it with cached block roots.
///
/// Returns `Ok(None)` if `index >= tree_size`, without calling
/// `subtree_root`.
///
/// `subtree_root` is called once per path element (at most 64 times), from
/// the root downwards, and only with nodes of the RFC 6962 tree: every range
/// `[start, end)` it is asked for is non-empty and either a perfect aligned
/// subtree (`end - start` is a power of two `2^j` and `start` is a multiple of
/// `2^j`) or a subtree on the right edge (`end == tree_size`). A store that
/// keeps the roots of aligned blocks of `2^b` leaves can therefore answer a
/// call of size `>= 2^b` by passing the roots of the blocks it covers (the
/// last one possibly partial) to [`root_of_leaf_hashes`], and a smaller call
/// from the leaf hashes inside one block (see [`MerkleBuilder`]).
///
/// # Errors
/// The first error `subtree_root` returns; no further calls are made.
pub fn inclusion_proof_with<E>(
    tree_size: u64,
    index: u64,
    mut subtree_root: impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Option<InclusionProof>, E> {
    if index >= tree_size {
        return Ok(None);
    }
    // Descend from the root, keeping the subtree [lo, hi) that holds `index`
    // and collecting the sibling of each subtree entered.
    let mut path = Vec::with_capacity(64);
    let (mut lo, mut hi) = (0u64, tree_size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            path.push(subtree_root(mid, hi)?);
            hi = mid;
        } else {
            path.push(subtree_root(lo, mid)?);
            lo = mid;
        }
    }
    // PATH lists siblings from the leaf upwards.
    path.reverse();
    Ok(Some(InclusionProof {
        leaf_index: index,
        tree_size,
        path,
    }))
}

/// Inclusion proof for `leaf_hashes[index]` in the tree of all `leaf_hashes`.
/// `None` if `index` is out of range.
///
/// Convenience over [`inclusion_proof_with`]: it rehashes the sibling
/// subtrees, about `leaf_hashes.len()` node hashes per proof.
#[must_use]
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Option<InclusionProof> {
    let result = inclusion_proof_with(leaf_hashes.len() as u64, index, |start, end| {
        // In range: inclusion_proof_with only asks for [start, end) with
        // start < end <= tree_size == leaf_hashes.len().
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(start, end)| leaf_hashes.get(start..end))
            .unwrap_or(&[]);
        Ok::<Hash, Infallible>(root_of_leaf_hashes(range))
    });
    match result {
        Ok(proof) => proof,
        Err(never) => match never {},
    }
}

/// The root that `proof` leads to from `leaf_hash`, following RFC 9162
/// §2.1.3.2, or `None` if the proof is malformed (index out of range, path
/// too long or too short for the index and tree size).
fn root_from_inclusion_proof(leaf_hash: &Hash, proof: &InclusionProof) -> Option<Hash> {
    if proof.leaf_index >= proof.tree_size {
        return None;
    }
    let mut fnode = proof.leaf_index;
    let mut snode = proof.tree_size - 1;
    let mut r = *leaf_hash;
    for p in &proof.path {
        if snode == 0 {
            // Path longer than the tree is deep.
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // Right edge: skip the levels where this node has no sibling.
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // A path too short leaves `snode` above zero.
    (snode == 0).then_some(r)
}

/// RFC 9162 §2.1.3.2 verification algorithm. Returns true if and only if the
/// proof shows `leaf_hash` at `proof.leaf_index` in a tree of
/// `proof.tree_size` leaves with that `root`.
///
/// Never panics; a malformed proof (index out of range, path of the wrong
/// length) is simply rejected. The tree size must come from the same signed
/// statement as `root` (see the module documentation).
#[must_use]
pub fn verify_inclusion(leaf_hash: &Hash, proof: &InclusionProof, root: &Hash) -> bool {
    root_from_inclusion_proof(leaf_hash, proof).is_some_and(|r| r == *root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---------------------------------------------------------------------
    // Deliberately naive references, straight from RFC 6962 §2.1 / §2.1.1.
    // ---------------------------------------------------------------------

    fn sha256(bytes: &[u8]) -> Hash {
        Sha256::digest(bytes).into()
    }

    fn ref_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) by the definition.
    fn ref_mth(d: &[Vec<u8>]) -> Hash {
        let n = d.len();
        if n == 0 {
            return sha256(&[]);
        }
        if n == 1 {
            let mut pre = vec![0x00];
            pre.extend_from_slice(&d[0]);
            return sha256(&pre);
        }
        let k = ref_k(n);
        let mut pre = vec![0x01];
        pre.extend_from_slice(&ref_mth(&d[..k]));
        pre.extend_from_slice(&ref_mth(&d[k..]));
        sha256(&pre)
    }

    /// PATH(m, D[n]) by the definition.
    fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = ref_k(n);
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    fn hex32(s: &str) -> Hash {
        let v = hex::decode(s).expect("test vector is hex");
        v.try_into().expect("test vector is 32 bytes")
    }

    /// Leaves `[0, n)` with distinct, size-varying contents.
    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut v = format!("item-{i}:").into_bytes();
                v.resize(v.len() + i % 7, (i % 251) as u8);
                v
            })
            .collect()
    }

    fn hashes(d: &[Vec<u8>]) -> Vec<Hash> {
        d.iter().map(|l| leaf_hash(l)).collect()
    }

    fn builder_root(d: &[Vec<u8>]) -> Hash {
        let mut b = MerkleBuilder::new();
        for l in d {
            b.push_leaf(l);
        }
        assert_eq!(b.len(), d.len() as u64);
        b.root()
    }

    // ---------------------------------------------------------------------
    // Known answers.
    // ---------------------------------------------------------------------

    /// The RFC 6962 reference leaves (certificate-transparency test vectors).
    const KAT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// MTH of the first n KAT leaves, n = 0..=8.
    const KAT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (tree size, index, path) from the transparency-dev reference tests.
    const KAT_PATHS: [(u64, u64, &[&str]); 7] = [
        (1, 0, &[]),
        (
            2,
            0,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            2,
            1,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            3,
            2,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            5,
            1,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            8,
            0,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            8,
            5,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn kat_leaves() -> Vec<Vec<u8>> {
        KAT_LEAVES
            .iter()
            .map(|l| hex::decode(l).expect("test vector is hex"))
            .collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let expected = hex32("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(empty_root(), expected);
        assert_eq!(MerkleBuilder::new().root(), expected);
        assert_eq!(MerkleBuilder::default().root(), expected);
        assert_eq!(root_of_leaf_hashes(&[]), expected);
        assert_eq!(ref_mth(&[]), expected);
        assert!(MerkleBuilder::new().is_empty());
    }

    #[test]
    fn hashes_have_the_rfc_prefixes() {
        assert_eq!(leaf_hash(b"abc"), sha256(b"\x00abc"));
        let (l, r) = ([7u8; 32], [9u8; 32]);
        let mut pre = vec![0x01];
        pre.extend_from_slice(&l);
        pre.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), sha256(&pre));
    }

    #[test]
    fn known_answer_roots() {
        let d = kat_leaves();
        let mut b = MerkleBuilder::new();
        assert_eq!(b.root(), hex32(KAT_ROOTS[0]));
        for n in 1..=8 {
            b.push_leaf(&d[n - 1]);
            let expected = hex32(KAT_ROOTS[n]);
            assert_eq!(b.root(), expected, "builder, size {n}");
            assert_eq!(
                root_of_leaf_hashes(&hashes(&d[..n])),
                expected,
                "slice, size {n}"
            );
            assert_eq!(ref_mth(&d[..n]), expected, "reference, size {n}");
        }
    }

    #[test]
    fn known_answer_inclusion_proofs() {
        let d = kat_leaves();
        let h = hashes(&d);
        for (size, index, path) in KAT_PATHS {
            let expected: Vec<Hash> = path.iter().map(|p| hex32(p)).collect();
            let proof = inclusion_proof(&h[..size as usize], index).expect("in range");
            assert_eq!(proof.path, expected, "size {size} index {index}");
            let root = hex32(KAT_ROOTS[size as usize]);
            assert!(verify_inclusion(&h[index as usize], &proof, &root));
        }
    }

    // ---------------------------------------------------------------------
    // Roots.
    // ---------------------------------------------------------------------

    #[test]
    fn builder_root_after_every_push_matches_reference() {
        let d = leaves(300);
        let mut b = MerkleBuilder::new();
        for n in 0..=d.len() {
            assert_eq!(b.len(), n as u64);
            assert_eq!(b.is_empty(), n == 0);
            assert_eq!(b.root(), ref_mth(&d[..n]), "size {n}");
            if n < d.len() {
                // Alternate the two push forms; they must be equivalent.
                if n % 2 == 0 {
                    b.push_leaf(&d[n]);
                } else {
                    b.push_leaf_hash(leaf_hash(&d[n]));
                }
            }
        }
    }

    #[test]
    fn builder_debug_is_compact() {
        let mut b = MerkleBuilder::new();
        for l in leaves(5) {
            b.push_leaf(&l);
        }
        let s = format!("{b:?}");
        assert!(s.contains("len: 5"), "{s}");
        // Two subtrees (4 + 1 leaves), not the whole fixed array.
        assert_eq!(s.matches('"').count(), 4, "{s}");
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for n in 2..5000u64 {
            assert_eq!(split_point(n), ref_k(n as usize) as u64, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
        assert_eq!(split_point((1 << 63) + 1), 1 << 63);
        assert_eq!(split_point(1 << 63), 1 << 62);
    }

    fn arb_leaves(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn roots_agree_with_reference(d in arb_leaves(2000)) {
            let expected = ref_mth(&d);
            prop_assert_eq!(builder_root(&d), expected);
            prop_assert_eq!(root_of_leaf_hashes(&hashes(&d)), expected);
        }
    }

    // ---------------------------------------------------------------------
    // Cross-check against the ct-merkle crate (same RFC 6962 hashing:
    // SHA-256 with 0x00 / 0x01 prefixes, SHA-256("") for the empty tree).
    // ---------------------------------------------------------------------

    mod ct {
        use super::*;
        use ct_merkle::InclusionProof as CtProof;
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        use sha2_011::Sha256 as CtSha256;

        fn ct_tree(d: &[Vec<u8>]) -> MemoryBackedTree<CtSha256, Vec<u8>> {
            let mut t = MemoryBackedTree::new();
            for l in d {
                t.push(l.clone());
            }
            t
        }

        #[test]
        fn ct_merkle_agrees_on_known_answers() {
            let d = kat_leaves();
            for n in 0..=8 {
                let root = ct_tree(&d[..n]).root();
                assert_eq!(root.as_bytes().as_slice(), &hex32(KAT_ROOTS[n])[..]);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn ct_merkle_agrees(d in arb_leaves(2000), pick in any::<prop::sample::Index>()) {
                let t = ct_tree(&d);
                let ct_root = t.root();
                let ours = builder_root(&d);
                prop_assert_eq!(ct_root.as_bytes().as_slice(), &ours[..]);
                if !d.is_empty() {
                    let i = pick.index(d.len());
                    let h = hashes(&d);
                    let proof = inclusion_proof(&h, i as u64).expect("in range");
                    let ct_proof = t.prove_inclusion(i);
                    let our_bytes = proof.path.concat();
                    prop_assert_eq!(ct_proof.as_bytes(), our_bytes.as_slice());
                    // ct-merkle accepts our proof, and we accept its proof.
                    prop_assert_eq!(ct_root.num_leaves(), d.len() as u64);
                    let ours_as_ct = CtProof::<CtSha256>::from_digests(
                        proof.path.iter().map(|p| p.as_slice().try_into().expect("32 bytes")),
                    );
                    prop_assert!(ct_root.verify_inclusion(&d[i], i as u64, &ours_as_ct).is_ok());
                    let theirs = InclusionProof {
                        leaf_index: i as u64,
                        tree_size: d.len() as u64,
                        path: ct_proof
                            .as_bytes()
                            .chunks(32)
                            .map(|c| c.try_into().expect("32 bytes"))
                            .collect(),
                    };
                    prop_assert!(verify_inclusion(&h[i], &theirs, &ours));
                }
            }
        }
    }

    // ---------------------------------------------------------------------
    // Inclusion proofs.
    // ---------------------------------------------------------------------

    /// For each path element, from the leaf up: is the sibling on the left?
    /// Computed from the ranges `inclusion_proof_with` asks for.
    fn shape(tree_size: u64, index: u64) -> Option<Vec<bool>> {
        let mut left = Vec::new();
        let proof = inclusion_proof_with(tree_size, index, |start, _end| {
            left.push(start < index);
            Ok::<Hash, Infallible>([0; 32])
        });
        let proof = match proof {
            Ok(p) => p,
            Err(never) => match never {},
        };
        proof.map(|_| {
            left.reverse();
            left
        })
    }

    /// Every tampering we can think of must be rejected; the honest proof
    /// must be accepted. `bits` chooses which bit positions get flipped in
    /// the leaf hash, in every path element and in the root. `thorough`
    /// tries every other leaf, every index in `0..n + 3` and every tree size
    /// in `0..2n + 3`; otherwise a sample around and far from the true ones.
    fn check_proof(h: &[Hash], root: &Hash, index: usize, bits: &[usize], thorough: bool) {
        let n = h.len() as u64;
        let m = index as u64;
        let proof = inclusion_proof(h, m).expect("in range");
        assert_eq!(proof.leaf_index, m);
        assert_eq!(proof.tree_size, n);
        assert!(verify_inclusion(&h[index], &proof, root), "n {n} i {index}");

        let flip = |x: &Hash, bit: usize| {
            let mut y = *x;
            y[bit / 8] ^= 1 << (bit % 8);
            y
        };
        for &bit in bits {
            assert!(!verify_inclusion(&flip(&h[index], bit), &proof, root));
            assert!(!verify_inclusion(&h[index], &proof, &flip(root, bit)));
            for j in 0..proof.path.len() {
                let mut bad = proof.clone();
                bad.path[j] = flip(&bad.path[j], bit);
                assert!(!verify_inclusion(&h[index], &bad, root));
            }
        }

        let far = [0, 1, n / 2, n - 1, n, n + 1, 2 * n, u64::MAX - 1, u64::MAX];
        let near = |x: u64| x.saturating_sub(2)..x.saturating_add(3);
        let candidates: Vec<u64> = if thorough {
            (0..2 * n + 3).chain(far).collect()
        } else {
            near(m).chain(near(n)).chain(far).collect()
        };

        // Another leaf at the same index is rejected (leaf contents are
        // distinct).
        for &j in &candidates {
            if j < n && j != m {
                assert!(!verify_inclusion(&h[j as usize], &proof, root));
            }
        }

        // Any other index is rejected.
        for &i in &candidates {
            if i != m {
                let bad = InclusionProof {
                    leaf_index: i,
                    ..proof.clone()
                };
                assert!(
                    !verify_inclusion(&h[index], &bad, root),
                    "n {n} i {index} -> {i}"
                );
            }
        }

        // Another tree size is rejected, except where the RFC algorithm
        // cannot tell: a size whose path for this index has the same shape
        // (see the module documentation: the size must be signed with the
        // root).
        let own_shape = shape(n, m);
        for &s in &candidates {
            if s != n {
                let bad = InclusionProof {
                    tree_size: s,
                    ..proof.clone()
                };
                let same_shape = shape(s, m) == own_shape;
                assert_eq!(
                    verify_inclusion(&h[index], &bad, root),
                    same_shape,
                    "n {n} i {index} -> size {s}"
                );
            }
        }

        // Paths too short or too long are rejected, structurally (no root
        // is computed at all), not only because the hashes do not match.
        for len in 0..proof.path.len() {
            let bad = InclusionProof {
                path: proof.path[..len].to_vec(),
                ..proof.clone()
            };
            assert_eq!(root_from_inclusion_proof(&h[index], &bad), None);
            assert!(!verify_inclusion(&h[index], &bad, root));
        }
        for extra in [[0u8; 32], *root, h[index]] {
            let mut bad = proof.clone();
            bad.path.push(extra);
            assert_eq!(root_from_inclusion_proof(&h[index], &bad), None);
            assert!(!verify_inclusion(&h[index], &bad, root));
            let mut bad = proof.clone();
            bad.path.insert(0, extra);
            assert_eq!(root_from_inclusion_proof(&h[index], &bad), None);
            assert!(!verify_inclusion(&h[index], &bad, root));
        }
    }

    /// Every index of every tree size up to 70, against the reference PATH.
    /// Every bit position is flipped for trees of up to 8 leaves; above
    /// that, two positions per proof, rotating so that all 256 positions
    /// are covered many times over (hashing is slow in debug builds).
    #[test]
    fn inclusion_proofs_exhaustive_small_trees() {
        let d = leaves(70);
        let h = hashes(&d);
        let every_bit: Vec<usize> = (0..256).collect();
        for n in 0..=d.len() {
            let root = ref_mth(&d[..n]);
            assert_eq!(inclusion_proof(&h[..n], n as u64), None);
            assert_eq!(inclusion_proof(&h[..n], n as u64 + 1), None);
            assert_eq!(inclusion_proof(&h[..n], u64::MAX), None);
            for i in 0..n {
                let proof = inclusion_proof(&h[..n], i as u64).expect("in range");
                assert_eq!(proof.path, ref_path(i, &d[..n]), "n {n} i {i}");
                let rotating = [(n * 97 + i * 31) % 256, (n * 13 + i * 151 + 128) % 256];
                let bits: &[usize] = if n <= 8 { &every_bit } else { &rotating };
                check_proof(&h[..n], &root, i, bits, n <= 16);
            }
        }
    }

    #[test]
    fn size_one_tree_proof_is_empty() {
        let h = leaf_hash(b"only");
        let proof = inclusion_proof(&[h], 0).expect("in range");
        assert!(proof.path.is_empty());
        assert!(verify_inclusion(&h, &proof, &h));
    }

    #[test]
    fn subtree_root_is_called_once_per_path_element_on_tree_nodes() {
        for n in 1..=300u64 {
            for i in 0..n {
                let mut calls = Vec::new();
                let proof = inclusion_proof_with(n, i, |s, e| {
                    calls.push((s, e));
                    Ok::<Hash, Infallible>([0; 32])
                });
                let proof = match proof {
                    Ok(p) => p.expect("in range"),
                    Err(never) => match never {},
                };
                assert_eq!(calls.len(), proof.path.len());
                assert!(calls.len() <= 64 - (n - 1).leading_zeros() as usize);
                for (s, e) in calls {
                    assert!(s < e && e <= n);
                    let size = e - s;
                    let perfect = size.is_power_of_two() && s % size == 0;
                    assert!(perfect || e == n, "n {n} i {i}: [{s}, {e})");
                }
            }
        }
    }

    #[test]
    fn subtree_root_errors_propagate_and_out_of_range_calls_nothing() {
        let r = inclusion_proof_with(10, 3, |_, _| Err::<Hash, &str>("storage down"));
        assert_eq!(r, Err("storage down"));
        let mut called = false;
        let r = inclusion_proof_with(10, 10, |_, _| {
            called = true;
            Err::<Hash, &str>("unreachable")
        });
        assert_eq!(r, Ok(None));
        assert!(!called);
        let r = inclusion_proof_with(0, 0, |_, _| Err::<Hash, &str>("unreachable"));
        assert_eq!(r, Ok(None));
    }

    /// Storage may answer `subtree_root` from cached roots of aligned
    /// blocks of 2^b leaves: combining block roots with
    /// `root_of_leaf_hashes` gives MTH of the leaves, for every range the
    /// proof generator asks for.
    #[test]
    fn block_roots_combine_into_subtree_roots() {
        let d = leaves(100);
        let h = hashes(&d);
        // Every range asked for, over all tree sizes and indices.
        let mut ranges = std::collections::BTreeSet::new();
        for n in 1..=h.len() as u64 {
            for i in 0..n {
                let r = inclusion_proof_with(n, i, |s, e| {
                    ranges.insert((s as usize, e as usize));
                    Ok::<Hash, Infallible>([0; 32])
                });
                assert!(matches!(r, Ok(Some(_))));
            }
        }
        for b in 0..6 {
            let block = 1usize << b;
            let block_roots: Vec<Hash> = h.chunks(block).map(root_of_leaf_hashes).collect();
            for &(s, e) in &ranges {
                let expected = root_of_leaf_hashes(&h[s..e]);
                if e - s >= block {
                    assert_eq!(s % block, 0, "aligned start");
                    // A partial last block is recomputed for this range.
                    let mut roots = block_roots[s / block..e.div_ceil(block)].to_vec();
                    if e % block != 0
                        && let Some(last) = roots.last_mut()
                    {
                        *last = root_of_leaf_hashes(&h[e - e % block..e]);
                    }
                    assert_eq!(root_of_leaf_hashes(&roots), expected, "{block}: {s}..{e}");
                } else {
                    assert_eq!(s / block, (e - 1) / block, "{block}: {s}..{e} in one block");
                }
            }
        }
    }

    #[test]
    fn huge_tree_sizes_do_not_panic() {
        // A tree of 2^64 - 1 leaves: the first leaf is 64 levels deep, the
        // last (a lone leaf on the right edge) 63.
        for (index, depth) in [(0, 64), (u64::MAX / 2, 64), (u64::MAX - 1, 63)] {
            let proof =
                inclusion_proof_with(u64::MAX, index, |_, _| Ok::<Hash, Infallible>([1; 32]));
            let proof = match proof {
                Ok(p) => p.expect("in range"),
                Err(never) => match never {},
            };
            assert_eq!(proof.path.len(), depth);
            let root = root_from_inclusion_proof(&[2; 32], &proof).expect("well-formed");
            assert!(verify_inclusion(&[2; 32], &proof, &root));
            let mut short = proof.clone();
            short.path.pop();
            assert!(!verify_inclusion(&[2; 32], &short, &root));
            let mut long = proof.clone();
            long.path.push([1; 32]);
            assert!(!verify_inclusion(&[2; 32], &long, &root));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn inclusion_proofs_random_trees(
            n in 1usize..2000,
            pick in any::<prop::sample::Index>(),
            bit in 0usize..256,
        ) {
            let d = leaves(n);
            let h = hashes(&d);
            let root = root_of_leaf_hashes(&h);
            let i = pick.index(n);
            let proof = inclusion_proof(&h, i as u64).expect("in range");
            prop_assert_eq!(&proof.path, &ref_path(i, &d));
            // Storage-backed generation gives the same proof.
            let via_callback = inclusion_proof_with(n as u64, i as u64, |s, e| {
                Ok::<Hash, Infallible>(ref_mth(&d[s as usize..e as usize]))
            });
            prop_assert_eq!(via_callback, Ok(Some(proof)));
            check_proof(&h, &root, i, &[bit], false);
        }

        #[test]
        fn block_roots_are_the_roots_of_the_blocks(n in 0usize..3000, log2 in 0u32..7) {
            let h = hashes(&leaves(n));
            let blocks = BlockRoots::of_leaf_hashes(&h, log2);
            let expected: Vec<Hash> = h.chunks(1 << log2).map(root_of_leaf_hashes).collect();
            prop_assert_eq!(blocks.roots.len() as u64, block_count(n as u64, log2));
            prop_assert_eq!(&blocks.roots, &expected);
            prop_assert_eq!(BlockRoots::decode(&blocks.encode()), Some(blocks));
        }

        #[test]
        fn proofs_from_block_roots_equal_full_proofs(
            n in 1usize..3000,
            pick in any::<prop::sample::Index>(),
            log2 in 0u32..8,
        ) {
            let h = hashes(&leaves(n));
            let i = pick.index(n);
            let blocks = BlockRoots::of_leaf_hashes(&h, log2);
            let (start, end) = blocks.block_of(i as u64, n as u64);
            let own = &h[start as usize..end as usize];
            prop_assert_eq!(blocks.proof(n as u64, i as u64, own), inclusion_proof(&h, i as u64));
            // Inputs of the wrong size give no proof rather than a wrong one.
            prop_assert_eq!(blocks.proof(n as u64, i as u64, &own[1..]), None);
            let mut short = blocks.clone();
            short.roots.pop();
            prop_assert_eq!(short.proof(n as u64, i as u64, own), None);
        }

        #[test]
        fn arbitrary_proofs_never_panic(
            leaf in any::<[u8; 32]>(),
            root in any::<[u8; 32]>(),
            leaf_index in prop_oneof![0u64..100, any::<u64>()],
            tree_size in prop_oneof![0u64..100, any::<u64>()],
            path in prop::collection::vec(any::<[u8; 32]>(), 0..80),
        ) {
            let proof = InclusionProof { leaf_index, tree_size, path };
            // A random root is not hit; the point is no panic on any shape.
            prop_assert!(!verify_inclusion(&leaf, &proof, &root));
        }
    }
}
