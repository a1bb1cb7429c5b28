//! Signed snapshots: the header encoding, its digest, and Ed25519 signatures.
//!
//! A snapshot is one state's complete inventory at a moment. What is signed is
//! not protobuf but the fixed-layout header encoding below (docs/protocol.md
//! §4), so any language can reproduce it byte for byte:
//!
//! ```text
//! "tally/v1/snapshot-header" 0x00   25 bytes, domain separation
//! state                              3 bytes ASCII
//! sequence                           u64 big-endian
//! as_of_unix_ms                      i64 big-endian
//! previous_digest                    32 bytes (zero for sequence 1)
//! item_count                         u64 big-endian
//! items_root                         32 bytes (RFC 6962 tree hash of the leaves)
//! ```
//!
//! The snapshot digest is SHA-256 of those 116 bytes, and the signature is
//! Ed25519 over the same bytes. Each header names its predecessor's digest, so
//! a state's snapshots form a hash chain.

pub mod leaf;
pub mod verify;

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, MerkleBuilder};
use crate::state::StateCode;

pub use leaf::{LeafError, LeafRef, encode_leaf, sort_items};
pub use verify::{ItemStreamVerifier, VerifyError};

/// Domain-separation prefix of the header encoding.
pub const HEADER_DOMAIN: &[u8; 25] = b"tally/v1/snapshot-header\0";
/// Length in bytes of the header encoding.
pub const HEADER_LEN: usize = 25 + 3 + 8 + 8 + 32 + 8 + 32;
/// Domain-separation prefix of the coordinator's receipt encoding.
pub(crate) const RECEIPT_DOMAIN: &[u8; 17] = b"tally/v1/receipt\0";

/// SHA-256 of a snapshot's header encoding: the snapshot's identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SnapshotDigest(pub [u8; 32]);

impl SnapshotDigest {
    /// The "previous digest" of a state's first snapshot.
    pub const GENESIS: SnapshotDigest = SnapshotDigest([0; 32]);

    pub fn from_slice(bytes: &[u8]) -> Option<SnapshotDigest> {
        bytes.try_into().ok().map(SnapshotDigest)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for SnapshotDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SnapshotDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotDigest({})", &self.to_hex()[..16])
    }
}

/// The signed fields of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub state: StateCode,
    pub sequence: u64,
    pub as_of_unix_ms: i64,
    pub previous_digest: SnapshotDigest,
    pub item_count: u64,
    pub items_root: Hash,
}

impl SnapshotHeader {
    /// The canonical header encoding: what is hashed and signed.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(HEADER_DOMAIN);
        put(self.state.as_bytes());
        put(&self.sequence.to_be_bytes());
        put(&self.as_of_unix_ms.to_be_bytes());
        put(&self.previous_digest.0);
        put(&self.item_count.to_be_bytes());
        put(&self.items_root);
        out
    }

    /// Parses a header encoding; `None` if the length, prefix or state code is wrong.
    pub fn decode(bytes: &[u8]) -> Option<SnapshotHeader> {
        if bytes.len() != HEADER_LEN || !bytes.starts_with(HEADER_DOMAIN) {
            return None;
        }
        let rest = &bytes[HEADER_DOMAIN.len()..];
        let state = StateCode::parse(std::str::from_utf8(&rest[0..3]).ok()?).ok()?;
        let u64_at = |i: usize| rest[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        Some(SnapshotHeader {
            state,
            sequence: u64_at(3)?,
            as_of_unix_ms: u64_at(11)? as i64,
            previous_digest: SnapshotDigest(rest[19..51].try_into().ok()?),
            item_count: u64_at(51)?,
            items_root: rest[59..91].try_into().ok()?,
        })
    }

    pub fn digest(&self) -> SnapshotDigest {
        SnapshotDigest(Sha256::digest(self.encode()).into())
    }

    pub fn sign(self, key: &SigningKey) -> SignedHeader {
        let signature = key.sign(&self.encode());
        SignedHeader {
            header: self,
            signature,
        }
    }
}

/// A header with the state's signature over its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeader {
    pub header: SnapshotHeader,
    pub signature: Signature,
}

/// The signature does not verify under the state's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the snapshot header signature does not verify with {state}'s public key")]
pub struct BadSignature {
    pub state: StateCode,
}

impl SignedHeader {
    /// Checks the signature with `verify_strict`, which rejects non-canonical
    /// signature scalars and small-order keys. A snapshot's identity is its
    /// digest, not its signature, so two valid signatures over one header
    /// are still one snapshot.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BadSignature> {
        key.verify_strict(&self.header.encode(), &self.signature)
            .map_err(|_| BadSignature {
                state: self.header.state,
            })
    }

    pub fn digest(&self) -> SnapshotDigest {
        self.header.digest()
    }
}

/// The coordinator's acknowledgement that a snapshot is durably stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub state: StateCode,
    pub sequence: u64,
    pub digest: SnapshotDigest,
    pub accepted_at_unix_ms: i64,
    pub signature: Signature,
}

impl Receipt {
    /// The receipt encoding (docs/protocol.md §5): domain, state, sequence,
    /// digest, acceptance time; 68 bytes.
    pub fn encode_fields(
        state: StateCode,
        sequence: u64,
        digest: &SnapshotDigest,
        accepted_at_unix_ms: i64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECEIPT_DOMAIN.len() + 3 + 8 + 32 + 8);
        out.extend_from_slice(RECEIPT_DOMAIN);
        out.extend_from_slice(state.as_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&digest.0);
        out.extend_from_slice(&accepted_at_unix_ms.to_be_bytes());
        out
    }

    pub fn issue(
        key: &SigningKey,
        state: StateCode,
        sequence: u64,
        digest: SnapshotDigest,
        accepted_at_unix_ms: i64,
    ) -> Receipt {
        let signature = key.sign(&Receipt::encode_fields(
            state,
            sequence,
            &digest,
            accepted_at_unix_ms,
        ));
        Receipt {
            state,
            sequence,
            digest,
            accepted_at_unix_ms,
            signature,
        }
    }

    /// Returns true if and only if the coordinator key signed this receipt.
    pub fn verify(&self, coordinator: &VerifyingKey) -> bool {
        let msg = Receipt::encode_fields(
            self.state,
            self.sequence,
            &self.digest,
            self.accepted_at_unix_ms,
        );
        coordinator.verify_strict(&msg, &self.signature).is_ok()
    }
}

/// A snapshot built from sorted items, ready to sign: its header and its
/// concatenated leaf encodings, split into chunks for transport and storage.
#[derive(Debug, Clone)]
pub struct UnsignedSnapshot {
    pub header: SnapshotHeader,
    pub chunks: Vec<Vec<u8>>,
}

/// Target size of one chunk of leaves: far below gRPC's 4 MiB message limit,
/// large enough that per-message overhead vanishes.
pub const CHUNK_TARGET_BYTES: usize = 1 << 20;

/// Items per block when building a snapshot in parallel. A power of two, so
/// each block is an aligned perfect subtree of the Merkle tree (see
/// [`MerkleBuilder::push_leaf_hash`]) and block roots combine into the root.
const BUILD_BLOCK_ITEMS: usize = 1 << 15;

/// Encodes `items` (which must already be in the defined order, see
/// [`sort_items`]) into leaves and computes the header.
///
/// Blocks of items are encoded and hashed on all cores; the result is the
/// same as encoding and hashing them one by one.
pub fn build_snapshot(
    state: StateCode,
    sequence: u64,
    as_of_unix_ms: i64,
    previous_digest: SnapshotDigest,
    items: &[crate::item::Item],
) -> UnsignedSnapshot {
    use rayon::prelude::*;

    struct Block {
        leaves: Vec<u8>,
        /// End offset of each leaf in `leaves`.
        ends: Vec<usize>,
        root: Hash,
    }
    let blocks: Vec<Block> = items
        .par_chunks(BUILD_BLOCK_ITEMS)
        .map(|block| {
            let mut tree = MerkleBuilder::new();
            let mut leaves = Vec::with_capacity(block.len() * 64);
            let mut ends = Vec::with_capacity(block.len());
            for item in block {
                let start = leaves.len();
                encode_leaf(item, &mut leaves);
                tree.push_leaf(&leaves[start..]);
                ends.push(leaves.len());
            }
            Block {
                leaves,
                ends,
                root: tree.root(),
            }
        })
        .collect();

    let mut top = MerkleBuilder::new();
    let mut chunks = Vec::new();
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_TARGET_BYTES + 1024);
    for block in &blocks {
        top.push_leaf_hash(block.root);
        let mut start = 0;
        for &end in &block.ends {
            chunk.extend_from_slice(&block.leaves[start..end]);
            start = end;
            if chunk.len() >= CHUNK_TARGET_BYTES {
                chunks.push(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(CHUNK_TARGET_BYTES + 1024),
                ));
            }
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    UnsignedSnapshot {
        header: SnapshotHeader {
            state,
            sequence,
            as_of_unix_ms,
            previous_digest,
            item_count: items.len() as u64,
            items_root: top.root(),
        },
        chunks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Item, Status};
    use crate::serial::CanonicalRule;

    fn small_snapshot() -> (SignedHeader, Vec<u8>, ed25519_dalek::VerifyingKey) {
        let rule = CanonicalRule::default();
        let kaz = StateCode::parse("KAZ").unwrap();
        let mut items = vec![
            Item::new("9K38", "ка-0 12", Status::InService, "D1", None, &rule).unwrap(),
            Item::new("9M39", "M1", Status::TransferredOut, "", Some(kaz), &rule).unwrap(),
            Item::new("AK-74M", "x 9", Status::Lost, "D2", None, &rule).unwrap(),
        ];
        sort_items(&mut items);
        let key = SigningKey::from_bytes(&[5; 32]);
        let unsigned = build_snapshot(kaz, 3, 1_790_000_000_000, SnapshotDigest([9; 32]), &items);
        (
            unsigned.header.sign(&key),
            unsigned.chunks.concat(),
            key.verifying_key(),
        )
    }

    fn items_verify(signed: &SignedHeader, leaves: &[u8]) -> bool {
        let mut v = ItemStreamVerifier::new(&signed.header, CanonicalRule::default());
        v.push_chunk(leaves).is_ok() && v.finish().is_ok()
    }

    /// Flipping any single bit of the header encoding, of the signature or of
    /// the item leaves makes verification fail.
    #[test]
    fn every_single_bit_flip_is_detected() {
        let (signed, leaves, key) = small_snapshot();
        assert!(signed.verify(&key).is_ok());
        assert!(items_verify(&signed, &leaves));

        let encoded = signed.header.encode();
        for bit in 0..encoded.len() * 8 {
            let mut bytes = encoded;
            bytes[bit / 8] ^= 1 << (bit % 8);
            // Either the bytes no longer parse as a header, or the signature fails.
            if let Some(header) = SnapshotHeader::decode(&bytes) {
                let tampered = SignedHeader {
                    header,
                    signature: signed.signature,
                };
                assert!(tampered.verify(&key).is_err(), "header bit {bit}");
            }
        }
        let sig = signed.signature.to_bytes();
        for bit in 0..sig.len() * 8 {
            let mut bytes = sig;
            bytes[bit / 8] ^= 1 << (bit % 8);
            let tampered = SignedHeader {
                header: signed.header,
                signature: ed25519_dalek::Signature::from_bytes(&bytes),
            };
            assert!(tampered.verify(&key).is_err(), "signature bit {bit}");
        }
        for bit in 0..leaves.len() * 8 {
            let mut bytes = leaves.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(!items_verify(&signed, &bytes), "leaf bit {bit}");
        }
    }

    /// The parallel block build equals the plain one-leaf-at-a-time tree, on
    /// both sides of block boundaries.
    #[test]
    fn parallel_build_matches_sequential_root() {
        let rule = CanonicalRule::default();
        for n in [
            0,
            1,
            2,
            BUILD_BLOCK_ITEMS - 1,
            BUILD_BLOCK_ITEMS,
            BUILD_BLOCK_ITEMS + 1,
            3 * BUILD_BLOCK_ITEMS + 5,
        ] {
            let mut items: Vec<Item> = (0..n)
                .map(|i| {
                    Item::new(
                        "9M39",
                        &format!("S{i:07}"),
                        Status::InService,
                        "",
                        None,
                        &rule,
                    )
                    .unwrap()
                })
                .collect();
            sort_items(&mut items);
            let built = build_snapshot(
                StateCode::parse("RUS").unwrap(),
                1,
                0,
                SnapshotDigest::GENESIS,
                &items,
            );
            let mut tree = MerkleBuilder::new();
            let mut all = Vec::new();
            for item in &items {
                let mut leaf = Vec::new();
                encode_leaf(item, &mut leaf);
                tree.push_leaf(&leaf);
                all.extend_from_slice(&leaf);
            }
            assert_eq!(built.header.items_root, tree.root(), "n = {n}");
            assert_eq!(built.chunks.concat(), all, "n = {n}");
            assert!(
                built
                    .chunks
                    .iter()
                    .all(|c| c.len() < CHUNK_TARGET_BYTES + 1024)
            );
        }
    }
}
