//! Evidence bundles: a custody trail that anyone can check offline.
//!
//! `tally trace --evidence FILE` writes one; `tally verify FILE --key
//! STATE=PUBKEYFILE …` checks it with nothing but the states' public keys.
//! For each entry the bundle holds the 116-byte header encoding the state
//! signed (docs/protocol.md §4.1), the signature, the item's leaf encoding
//! (§2.4) and its inclusion proof (§3.2), plus the entry's fields in plain
//! text. Verification proves that the state signed a snapshot whose items
//! include exactly that leaf, and that every plain-text field says what the
//! signed bytes say.
//!
//! # File format
//! JSON, written by [`Bundle::to_json`]: two-space indentation, fields in the
//! order of the structs below, byte strings as lowercase hexadecimal, one
//! final newline. Only content that verification checks is in the bundle
//! (no alerts, no custody summary: those are the coordinator's derivations
//! and are in `tally trace --format json`). A file must be byte for byte what
//! [`Bundle::to_json`] produces for its content, so any altered byte is
//! detected: either the content no longer matches the signed bytes, or the
//! file is no longer in that form. A bundle with no entries (an item nobody
//! reported) verifies but proves nothing.
//!
//! ```json
//! {
//!   "format": "tally-evidence/v1",
//!   "key": { "model": "9K38", "serial": "KA012" },
//!   "entries": [
//!     {
//!       "state": "KAZ", "sequence": 1, "as_of_unix_ms": 1767225600000,
//!       "status": "in_service", "site": "Depot 7", "counterparty": "",
//!       "model": "9K38", "serial": "ка-0 12",
//!       "evidence": {
//!         "digest": "…64 hex…", "header": "…232 hex…", "signature": "…128 hex…",
//!         "leaf": "…", "leaf_index": 2, "tree_size": 6, "proof": ["…64 hex…", …]
//!       }
//!     }
//!   ]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash, InclusionProof};
use crate::snapshot::leaf::LeafError;
use crate::snapshot::{HEADER_LEN, LeafRef, SnapshotHeader};
use crate::state::StateCode;

/// The value of a bundle's `format` field.
pub const BUNDLE_FORMAT: &str = "tally-evidence/v1";

/// A custody trail with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The canonical item key every entry is about.
    pub key: BundleKey,
    /// Oldest first, as the coordinator ordered them.
    pub entries: Vec<BundleEntry>,
}

/// A canonical item key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    pub model: String,
    pub serial: String,
}

/// One row of one snapshot: what it says, and the evidence that it was signed.
/// The JSON form of a trace entry, also used by `tally trace --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub state: String,
    pub sequence: u64,
    pub as_of_unix_ms: i64,
    /// `in_service`, `in_storage`, `transferred_out`, `expended`, `destroyed` or `lost`.
    pub status: String,
    pub site: String,
    /// The receiving state for `transferred_out`, else empty.
    pub counterparty: String,
    /// Raw model and serial, exactly as the state wrote them.
    pub model: String,
    pub serial: String,
    pub evidence: EntryEvidence,
}

/// The signed bytes behind one entry, as lowercase hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryEvidence {
    /// SHA-256 of `header`: the snapshot's identity (docs/protocol.md §4.2).
    pub digest: String,
    /// The 116-byte header encoding.
    pub header: String,
    /// The state's Ed25519 signature over `header` (64 bytes).
    pub signature: String,
    /// The item's leaf encoding.
    pub leaf: String,
    pub leaf_index: u64,
    /// Equal to the header's `item_count` (checked; the proof is verified
    /// against the signed count, never this field).
    pub tree_size: u64,
    /// Audit path, 32-byte hashes, the leaf's sibling first.
    pub proof: Vec<String>,
}

/// Why a bundle is not valid evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The file is not JSON of the bundle's shape.
    #[error("not a valid evidence bundle: line {line}, column {column}: {reason}")]
    Json {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("unknown bundle format '{found}' (expected 'tally-evidence/v1')")]
    Format { found: String },
    /// The content verifies, but the bytes are not the form `tally` writes
    /// for it: something outside the checked values (spacing, escapes) was
    /// edited.
    #[error(
        "the file differs from the form tally writes for its content, first at line {line}, column {column}: it was altered after it was written"
    )]
    NotCanonical { line: usize, column: usize },
    #[error("entry {index} ({label}): {source}")]
    Entry {
        index: usize,
        /// The entry's claimed state and sequence, for people to find it.
        label: String,
        #[source]
        source: EntryError,
    },
    /// A trace response without evidence cannot become a bundle.
    #[error("trace entry {index} carries no evidence")]
    MissingEvidence { index: usize },
    #[error("cannot encode the bundle: {0}")]
    Encode(String),
}

/// What failed in one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("{field} is not lowercase hexadecimal")]
    NotHex { field: &'static str },
    #[error("{field} must be {expected} bytes, got {found}")]
    Length {
        field: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("header is not a snapshot header encoding (docs/protocol.md §4.1)")]
    BadHeader,
    #[error("digest {claimed} is not the SHA-256 of the header ({computed})")]
    Digest { claimed: String, computed: String },
    #[error("no public key was given for {state}, so its signature cannot be checked")]
    MissingKey { state: StateCode },
    #[error(
        "the signature does not verify under {state}'s public key: the header or the signature was altered, or the key given for {state} is not the one it signs with"
    )]
    BadSignature { state: StateCode },
    #[error("{field} is {claimed:?} but the signed {signed_in} says {signed:?}")]
    Mismatch {
        field: &'static str,
        claimed: String,
        signed: String,
        signed_in: &'static str,
    },
    #[error("leaf does not parse: {0}")]
    Leaf(LeafError),
    #[error("leaf has {0} bytes after its encoding")]
    TrailingLeafBytes(usize),
    #[error("the leaf's item key {leaf} is not the bundle's key {bundle}")]
    KeyMismatch { leaf: String, bundle: String },
    #[error(
        "the inclusion proof does not lead from the leaf at index {leaf_index} to the signed items root of {tree_size} items"
    )]
    Proof { leaf_index: u64, tree_size: u64 },
}

/// One verified entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub header: SnapshotHeader,
    pub leaf_index: u64,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    pub key: BundleKey,
    pub entries: Vec<VerifiedEntry>,
    /// The states whose signatures were checked.
    pub states: BTreeSet<StateCode>,
}

impl Bundle {
    /// The bundle file: pretty JSON and a final newline. Deterministic: the
    /// same bundle always gives the same bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, BundleError> {
        let mut out =
            serde_json::to_vec_pretty(self).map_err(|e| BundleError::Encode(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses a bundle file (structure only; see [`verify_file`]).
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, BundleError> {
        serde_json::from_slice(bytes).map_err(|e| {
            // serde_json appends the position to its message; it is in the fields.
            let message = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            BundleError::Json {
                line: e.line(),
                column: e.column(),
                reason: message
                    .strip_suffix(&position)
                    .unwrap_or(&message)
                    .to_string(),
            }
        })
    }
}

impl BundleEntry {
    fn label(&self) -> String {
        format!("{} #{}", self.state.escape_debug(), self.sequence)
    }
}

/// Strict lowercase hexadecimal: upper-case digits are refused, so that no
/// two spellings of one bundle exist.
fn unhex(field: &'static str, s: &str) -> Result<Vec<u8>, EntryError> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(EntryError::NotHex { field });
    }
    hex::decode(s).map_err(|_| EntryError::NotHex { field })
}

fn unhex_n<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], EntryError> {
    let bytes = unhex(field, s)?;
    let found = bytes.len();
    bytes.try_into().map_err(|_| EntryError::Length {
        field,
        expected: N,
        found,
    })
}

fn same(
    field: &'static str,
    claimed: impl ToString,
    signed: impl ToString,
    signed_in: &'static str,
) -> Result<(), EntryError> {
    let (claimed, signed) = (claimed.to_string(), signed.to_string());
    if claimed == signed {
        Ok(())
    } else {
        Err(EntryError::Mismatch {
            field,
            claimed,
            signed,
            signed_in,
        })
    }
}

/// Checks one entry against the signed bytes it carries.
fn verify_entry(
    entry: &BundleEntry,
    key: &BundleKey,
    keys: &BTreeMap<StateCode, VerifyingKey>,
) -> Result<VerifiedEntry, EntryError> {
    let ev = &entry.evidence;

    // The header, its digest, and the state's signature over its bytes.
    let header_bytes: [u8; HEADER_LEN] = unhex_n("header", &ev.header)?;
    let header = SnapshotHeader::decode(&header_bytes).ok_or(EntryError::BadHeader)?;
    let digest: Hash = unhex_n("digest", &ev.digest)?;
    let computed: Hash = Sha256::digest(header_bytes).into();
    if digest != computed {
        return Err(EntryError::Digest {
            claimed: ev.digest.clone(),
            computed: hex::encode(computed),
        });
    }
    let public = keys.get(&header.state).ok_or(EntryError::MissingKey {
        state: header.state,
    })?;
    let signature = Signature::from_bytes(&unhex_n::<64>("signature", &ev.signature)?);
    public
        .verify_strict(&header_bytes, &signature)
        .map_err(|_| EntryError::BadSignature {
            state: header.state,
        })?;

    // What the entry says about the snapshot is what the header says.
    same("state", &entry.state, header.state, "header")?;
    same("sequence", entry.sequence, header.sequence, "header")?;
    same(
        "as_of_unix_ms",
        entry.as_of_unix_ms,
        header.as_of_unix_ms,
        "header",
    )?;
    same("tree_size", ev.tree_size, header.item_count, "header")?;

    // What it says about the item is what the leaf says.
    let leaf_bytes = unhex("leaf", &ev.leaf)?;
    let (leaf, len) = LeafRef::parse(&leaf_bytes).map_err(EntryError::Leaf)?;
    if len != leaf_bytes.len() {
        return Err(EntryError::TrailingLeafBytes(leaf_bytes.len() - len));
    }
    same("model", &entry.model, leaf.model, "leaf")?;
    same("serial", &entry.serial, leaf.serial, "leaf")?;
    same("status", &entry.status, leaf.status, "leaf")?;
    same("site", &entry.site, leaf.site, "leaf")?;
    same(
        "counterparty",
        &entry.counterparty,
        leaf.counterparty.map(|c| c.to_string()).unwrap_or_default(),
        "leaf",
    )?;
    if (leaf.canonical_model, leaf.canonical_serial) != (key.model.as_str(), key.serial.as_str()) {
        return Err(EntryError::KeyMismatch {
            leaf: format!("{}/{}", leaf.canonical_model, leaf.canonical_serial),
            bundle: format!("{}/{}", key.model, key.serial),
        });
    }

    // And the leaf is in the signed tree: the tree size is the signed count.
    let path = ev
        .proof
        .iter()
        .map(|p| unhex_n::<32>("proof", p))
        .collect::<Result<Vec<Hash>, _>>()?;
    let proof = InclusionProof {
        leaf_index: ev.leaf_index,
        tree_size: header.item_count,
        path,
    };
    if !merkle::verify_inclusion(&merkle::leaf_hash(&leaf_bytes), &proof, &header.items_root) {
        return Err(EntryError::Proof {
            leaf_index: ev.leaf_index,
            tree_size: header.item_count,
        });
    }
    Ok(VerifiedEntry {
        header,
        leaf_index: ev.leaf_index,
    })
}

/// Checks every entry of `bundle`: the header decodes and hashes to the
/// digest; its signature verifies strictly (docs/protocol.md §4.4) under the
/// key given for the header's state; the entry's state, sequence, as-of time
/// and tree size are the header's; its raw model, serial, status, site and
/// counterparty are the leaf's; the leaf's canonical key is the bundle's key;
/// and the inclusion proof leads from the leaf to the header's `items_root`
/// in a tree of the header's `item_count` leaves. Stops at the first failure,
/// naming the entry.
pub fn verify(
    bundle: &Bundle,
    keys: &BTreeMap<StateCode, VerifyingKey>,
) -> Result<VerifiedBundle, BundleError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(BundleError::Format {
            found: bundle.format.clone(),
        });
    }
    let mut entries = Vec::with_capacity(bundle.entries.len());
    let mut states = BTreeSet::new();
    for (index, entry) in bundle.entries.iter().enumerate() {
        let verified =
            verify_entry(entry, &bundle.key, keys).map_err(|source| BundleError::Entry {
                index,
                label: entry.label(),
                source,
            })?;
        states.insert(verified.header.state);
        entries.push(verified);
    }
    Ok(VerifiedBundle {
        key: bundle.key.clone(),
        entries,
        states,
    })
}

/// Checks that `bytes` are exactly what [`Bundle::to_json`] writes for `bundle`.
pub fn check_canonical(bytes: &[u8], bundle: &Bundle) -> Result<(), BundleError> {
    let expected = bundle.to_json()?;
    if bytes == expected.as_slice() {
        return Ok(());
    }
    let at = bytes
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(bytes.len().min(expected.len()));
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    Err(BundleError::NotCanonical {
        line,
        column: at - line_start + 1,
    })
}

/// Everything `tally verify` checks, on the bytes of a bundle file: it
/// parses, every entry verifies ([`verify`]), and the file is in the form
/// `tally` writes ([`check_canonical`]). Entry failures are reported first,
/// since they say what was altered.
pub fn verify_file(
    bytes: &[u8],
    keys: &BTreeMap<StateCode, VerifyingKey>,
) -> Result<VerifiedBundle, BundleError> {
    let bundle = Bundle::from_json(bytes)?;
    let verified = verify(&bundle, keys)?;
    check_canonical(bytes, &bundle)?;
    Ok(verified)
}

impl VerifiedBundle {
    /// One line for people: what was verified.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "verified {} entr{} for {}/{}",
            self.entries.len(),
            if self.entries.len() == 1 { "y" } else { "ies" },
            self.key.model,
            self.key.serial
        );
        if self.entries.is_empty() {
            s.push_str(": the bundle has no entries and proves nothing");
        } else {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            let _ = write!(
                s,
                ": signatures by {} and every inclusion proof check against the signed items roots",
                states.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Item, Status};
    use crate::serial::CanonicalRule;
    use crate::snapshot::leaf::leaves;
    use crate::snapshot::{SignedHeader, SnapshotDigest, build_snapshot, sort_items};
    use ed25519_dalek::SigningKey;

    fn key_of(state: &str) -> SigningKey {
        let mut seed = [3u8; 32];
        seed[..3].copy_from_slice(state.as_bytes());
        SigningKey::from_bytes(&seed)
    }

    fn keys(states: &[&str]) -> BTreeMap<StateCode, VerifyingKey> {
        states
            .iter()
            .map(|s| (StateCode::parse(s).unwrap(), key_of(s).verifying_key()))
            .collect()
    }

    /// A signed snapshot of `rows` (model, serial, status, counterparty) and its leaves.
    fn signed(
        state: &str,
        sequence: u64,
        rows: &[(&str, &str, Status, Option<&str>)],
    ) -> (SignedHeader, Vec<Vec<u8>>) {
        let rule = CanonicalRule::default();
        let mut items: Vec<Item> = rows
            .iter()
            .map(|(m, s, st, cp)| {
                Item::new(
                    m,
                    s,
                    *st,
                    "Арсенал 3",
                    cp.map(|c| StateCode::parse(c).unwrap()),
                    &rule,
                )
                .unwrap()
            })
            .collect();
        sort_items(&mut items);
        let unsigned = build_snapshot(
            StateCode::parse(state).unwrap(),
            sequence,
            1_767_225_600_000 + sequence as i64,
            SnapshotDigest::GENESIS,
            &items,
        );
        let all = unsigned.chunks.concat();
        let leaves: Vec<Vec<u8>> = leaves(&all).map(|l| l.unwrap().1.to_vec()).collect();
        (unsigned.header.sign(&key_of(state)), leaves)
    }

    /// The entries of every leaf of the snapshot whose key is 9K38/KA012.
    fn entries_for(signed: &SignedHeader, leaves: &[Vec<u8>]) -> Vec<BundleEntry> {
        let hashes: Vec<Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
        let mut out = Vec::new();
        for (i, bytes) in leaves.iter().enumerate() {
            let (leaf, _) = LeafRef::parse(bytes).unwrap();
            if leaf.key_strs() != ("9K38", "KA012") {
                continue;
            }
            let proof = merkle::inclusion_proof(&hashes, i as u64).unwrap();
            let h = &signed.header;
            out.push(BundleEntry {
                state: h.state.to_string(),
                sequence: h.sequence,
                as_of_unix_ms: h.as_of_unix_ms,
                status: leaf.status.to_string(),
                site: leaf.site.to_string(),
                counterparty: leaf.counterparty.map(|c| c.to_string()).unwrap_or_default(),
                model: leaf.model.to_string(),
                serial: leaf.serial.to_string(),
                evidence: EntryEvidence {
                    digest: signed.digest().to_hex(),
                    header: hex::encode(h.encode()),
                    signature: hex::encode(signed.signature.to_bytes()),
                    leaf: hex::encode(bytes),
                    leaf_index: i as u64,
                    tree_size: h.item_count,
                    proof: proof.path.iter().map(hex::encode).collect(),
                },
            });
        }
        out
    }

    /// KAZ lists the key once (Latin), RUS twice (Cyrillic, and transferred).
    fn bundle() -> Bundle {
        let (kaz, kaz_leaves) = signed(
            "KAZ",
            1,
            &[
                ("9K38", "KA-012", Status::InStorage, None),
                ("9K38", "KA011", Status::InService, None),
                ("9M39", "B7", Status::InService, None),
            ],
        );
        let (rus, rus_leaves) = signed(
            "RUS",
            2,
            &[
                ("9K38", "ка-0 12", Status::InService, None),
                ("9К38", "KA 012", Status::TransferredOut, Some("KAZ")),
                ("9K38", "A1", Status::InService, None),
                ("AK-74M", "X1", Status::Lost, None),
                ("9P39", "P1", Status::Destroyed, None),
            ],
        );
        let mut entries = entries_for(&kaz, &kaz_leaves);
        entries.extend(entries_for(&rus, &rus_leaves));
        Bundle {
            format: BUNDLE_FORMAT.into(),
            key: BundleKey {
                model: "9K38".into(),
                serial: "KA012".into(),
            },
            entries,
        }
    }

    /// Changes hex digit `at` of `s` to a different hex digit.
    fn flip(s: &mut String, at: usize) {
        let c = s.as_bytes()[at];
        let to = if c == b'0' { "1" } else { "0" };
        s.replace_range(at..at + 1, to);
    }

    #[track_caller]
    fn entry_error(
        bundle: &Bundle,
        keys: &BTreeMap<StateCode, VerifyingKey>,
    ) -> (usize, EntryError) {
        match verify(bundle, keys) {
            Err(BundleError::Entry { index, source, .. }) => (index, source),
            other => panic!("expected an entry error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_bundle_verifies_and_round_trips_through_json() {
        let b = bundle();
        assert_eq!(b.entries.len(), 3);
        let verified = verify(&b, &keys(&["KAZ", "RUS"])).unwrap();
        assert_eq!(verified.entries.len(), 3);
        assert_eq!(verified.states.len(), 2);
        let json = b.to_json().unwrap();
        assert_eq!(Bundle::from_json(&json).unwrap(), b);
        assert!(verify_file(&json, &keys(&["KAZ", "RUS"])).is_ok());
        assert!(
            verified
                .summary()
                .contains("verified 3 entries for 9K38/KA012")
        );
    }

    #[test]
    fn a_missing_key_names_the_state() {
        let (index, err) = entry_error(&bundle(), &keys(&["KAZ"]));
        assert_eq!(index, 1);
        assert!(matches!(err, EntryError::MissingKey { state } if state.as_str() == "RUS"));
        assert!(err.to_string().contains("RUS"), "{err}");
    }

    #[test]
    fn a_wrong_key_fails_the_signature() {
        let mut k = keys(&["KAZ", "RUS"]);
        k.insert(
            StateCode::parse("RUS").unwrap(),
            key_of("BLR").verifying_key(),
        );
        let (index, err) = entry_error(&bundle(), &k);
        assert_eq!(index, 1);
        assert!(matches!(err, EntryError::BadSignature { .. }), "{err}");
    }

    /// Each kind of tampering is caught by the check meant for it.
    #[test]
    fn each_kind_of_tampering_fails_with_its_error() {
        let k = keys(&["KAZ", "RUS"]);
        type Tamper = fn(&mut BundleEntry);
        type Check = fn(&EntryError) -> bool;
        let cases: &[(&str, Tamper, Check)] = &[
            (
                "as_of in the header (signature)",
                |e| {
                    let mut h = hex::decode(&e.evidence.header).unwrap();
                    h[40] ^= 1;
                    e.evidence.header = hex::encode(&h);
                    e.evidence.digest = hex::encode(Sha256::digest(&h));
                },
                |e| matches!(e, EntryError::BadSignature { .. }),
            ),
            (
                "header domain",
                |e| flip(&mut e.evidence.header, 1),
                |e| matches!(e, EntryError::BadHeader),
            ),
            (
                "digest",
                |e| flip(&mut e.evidence.digest, 0),
                |e| matches!(e, EntryError::Digest { .. }),
            ),
            (
                "signature",
                |e| flip(&mut e.evidence.signature, 10),
                |e| matches!(e, EntryError::BadSignature { .. }),
            ),
            (
                "upper-case hex",
                |e| e.evidence.signature = e.evidence.signature.to_uppercase(),
                |e| matches!(e, EntryError::NotHex { field: "signature" }),
            ),
            (
                "short signature",
                |e| e.evidence.signature.truncate(126),
                |e| {
                    matches!(
                        e,
                        EntryError::Length {
                            field: "signature",
                            expected: 64,
                            found: 63
                        }
                    )
                },
            ),
            (
                "claimed state",
                |e| e.state = "BLR".into(),
                |e| matches!(e, EntryError::Mismatch { field: "state", .. }),
            ),
            (
                "claimed sequence",
                |e| e.sequence += 1,
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "sequence",
                            ..
                        }
                    )
                },
            ),
            (
                "claimed as_of",
                |e| e.as_of_unix_ms -= 1,
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "as_of_unix_ms",
                            ..
                        }
                    )
                },
            ),
            (
                "claimed tree size",
                |e| e.evidence.tree_size += 1,
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "tree_size",
                            ..
                        }
                    )
                },
            ),
            (
                "claimed raw serial",
                |e| e.serial = "KA012".into(),
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "serial",
                            ..
                        }
                    )
                },
            ),
            (
                "claimed status",
                |e| e.status = "lost".into(),
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "status",
                            ..
                        }
                    )
                },
            ),
            (
                "claimed site",
                |e| e.site = "Depot 9".into(),
                |e| matches!(e, EntryError::Mismatch { field: "site", .. }),
            ),
            (
                "claimed counterparty",
                |e| e.counterparty = "KGZ".into(),
                |e| {
                    matches!(
                        e,
                        EntryError::Mismatch {
                            field: "counterparty",
                            ..
                        }
                    )
                },
            ),
            (
                "leaf status byte (fields then disagree)",
                |e| {
                    let mut l = hex::decode(&e.evidence.leaf).unwrap();
                    let (leaf, _) = LeafRef::parse(&l).unwrap();
                    let at = 1 + [
                        leaf.canonical_model,
                        leaf.canonical_serial,
                        leaf.model,
                        leaf.serial,
                    ]
                    .iter()
                    .map(|f| 2 + f.len())
                    .sum::<usize>();
                    l[at] = Status::Lost.code();
                    e.evidence.leaf = hex::encode(&l);
                    e.status = "lost".into();
                },
                |e| matches!(e, EntryError::Proof { .. }),
            ),
            (
                "leaf truncated",
                |e| e.evidence.leaf.truncate(20),
                |e| matches!(e, EntryError::Leaf(LeafError::Truncated)),
            ),
            (
                "leaf with trailing bytes",
                |e| e.evidence.leaf.push_str("00"),
                |e| matches!(e, EntryError::TrailingLeafBytes(1)),
            ),
            (
                "leaf index",
                |e| e.evidence.leaf_index ^= 1,
                |e| matches!(e, EntryError::Proof { .. }),
            ),
            (
                "proof element",
                |e| flip(&mut e.evidence.proof[0], 0),
                |e| matches!(e, EntryError::Proof { .. }),
            ),
            (
                "proof element dropped",
                |e| {
                    e.evidence.proof.pop();
                },
                |e| matches!(e, EntryError::Proof { .. }),
            ),
            (
                "proof element of the wrong size",
                |e| e.evidence.proof[0].push_str("00"),
                |e| matches!(e, EntryError::Length { field: "proof", .. }),
            ),
        ];
        for &(what, tamper, expected) in cases {
            for target in 0..3 {
                let mut b = bundle();
                tamper(&mut b.entries[target]);
                let (index, err) = entry_error(&b, &k);
                assert_eq!(index, target, "{what}");
                assert!(expected(&err), "{what}: got {err}");
            }
        }
    }

    #[test]
    fn an_entry_about_another_key_fails() {
        let mut b = bundle();
        b.key.serial = "KA011".into();
        let (index, err) = entry_error(&b, &keys(&["KAZ", "RUS"]));
        assert_eq!(index, 0);
        assert!(matches!(err, EntryError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn an_unknown_format_fails() {
        let mut b = bundle();
        b.format = "tally-evidence/v2".into();
        assert!(matches!(
            verify(&b, &keys(&["KAZ", "RUS"])),
            Err(BundleError::Format { .. })
        ));
    }

    /// The proof is checked with the header's item count, and a tree size
    /// claimed in the entry must equal it.
    #[test]
    fn a_tree_size_claim_must_equal_the_signed_count() {
        let mut b = bundle();
        b.entries[0].evidence.tree_size -= 1;
        let (_, err) = entry_error(&b, &keys(&["KAZ", "RUS"]));
        assert!(matches!(
            err,
            EntryError::Mismatch {
                field: "tree_size",
                ..
            }
        ));
    }

    /// Any change of the file's bytes is caught: by the content checks, by
    /// the JSON parser, or by the canonical-form check.
    #[test]
    fn every_byte_flip_of_a_bundle_file_fails() {
        let k = keys(&["KAZ", "RUS"]);
        let mut b = bundle();
        b.entries.truncate(2);
        let json = b.to_json().unwrap();
        for at in 0..json.len() {
            for mask in [0x01u8, 0x20, 0x80] {
                let mut bytes = json.clone();
                bytes[at] ^= mask;
                assert!(
                    verify_file(&bytes, &k).is_err(),
                    "byte {at} ^ {mask:#04x} passed"
                );
            }
        }
        // Whitespace and escapes are content-free but still detected.
        let spaced = String::from_utf8(json.clone())
            .unwrap()
            .replacen("{\n", "{ \n", 1);
        assert!(matches!(
            verify_file(spaced.as_bytes(), &k),
            Err(BundleError::NotCanonical { line: 1, column: 2 })
        ));
        let escaped = String::from_utf8(json)
            .unwrap()
            .replacen("ка", "\\u043aа", 1);
        assert!(matches!(
            verify_file(escaped.as_bytes(), &k),
            Err(BundleError::NotCanonical { .. })
        ));
    }

    #[test]
    fn broken_json_gives_a_position() {
        let err = verify_file(b"{\"format\": ", &keys(&[])).unwrap_err();
        assert!(matches!(err, BundleError::Json { line: 1, .. }), "{err}");
        assert!(err.to_string().starts_with("not a valid evidence bundle"));
    }

    #[test]
    fn an_empty_bundle_verifies_and_says_it_proves_nothing() {
        let b = Bundle {
            format: BUNDLE_FORMAT.into(),
            key: BundleKey {
                model: "9K38".into(),
                serial: "ZZ9".into(),
            },
            entries: Vec::new(),
        };
        let v = verify_file(&b.to_json().unwrap(), &keys(&[])).unwrap();
        assert!(v.summary().contains("proves nothing"));
    }
}
