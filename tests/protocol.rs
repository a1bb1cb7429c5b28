//! Golden test of docs/protocol.md: reads every ```vector block of the
//! document, recomputes each expected value from the inputs with the real code
//! (canonical forms, leaves, order, Merkle root, header, digest, signatures,
//! receipts, inclusion proofs, key files), and fails if the document or the code
//! drifts. Then runs docs/examples/tally_vectors.py, the independent Python
//! implementation of the document (python3 is required: `.ci/run` installs
//! Debian's python3 where it is missing; this test fails, never skips,
//! without it).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ed25519_dalek::{Signature, SigningKey};
use tally::item::{Item, Status};
use tally::merkle::{InclusionProof, inclusion_proof, leaf_hash, verify_inclusion};
use tally::serial::CanonicalRule;
use tally::snapshot::leaf::{LeafRef, leaves};
use tally::snapshot::{
    HEADER_LEN, ItemStreamVerifier, Receipt, SignedHeader, SnapshotDigest, SnapshotHeader,
    build_snapshot, encode_leaf, sort_items,
};
use tally::state::StateCode;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/examples/tally_vectors.py"
);

/// One vector block: its `name: value` lines in order.
struct Block {
    lines: Vec<(String, String)>,
}

impl Block {
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        let name = name.to_string();
        self.lines
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn one(&self, name: &str) -> &str {
        let values: Vec<&str> = self.all(name).collect();
        assert_eq!(values.len(), 1, "exactly one {name:?} line expected");
        values[0]
    }

    fn int<T: std::str::FromStr>(&self, name: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.one(name).parse().expect(name)
    }

    fn hex32(&self, name: &str) -> [u8; 32] {
        hex32(self.one(name))
    }
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn vector_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_end() == "```vector" => current = Some(Vec::new()),
            None => {}
            Some(lines) if line.trim_end() == "```" => {
                blocks.push(Block {
                    lines: std::mem::take(lines),
                });
                current = None;
            }
            Some(lines) => {
                assert!(line.is_ascii(), "vector lines are ASCII: {line:?}");
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let (name, value) = trimmed
                    .split_once(':')
                    .unwrap_or_else(|| panic!("vector line without ':': {line:?}"));
                lines.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    assert!(current.is_none(), "unterminated vector block");
    blocks
}

/// Whitespace-separated JSON strings, e.g. `"raw" "canonical"`.
fn json_strings(s: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<String>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("JSON strings in {s:?}: {e}"))
}

fn json_array(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("JSON array {s:?}: {e}"))
}

fn state(s: &str) -> StateCode {
    StateCode::parse(s).expect("state code")
}

struct Keys {
    state: SigningKey,
    coordinator: SigningKey,
}

fn check_keys(block: &Block) -> Keys {
    let state = SigningKey::from_bytes(&block.hex32("state_seed"));
    let coordinator = SigningKey::from_bytes(&block.hex32("coordinator_seed"));
    assert_eq!(
        hex::encode(state.verifying_key().to_bytes()),
        block.one("state_public_key")
    );
    assert_eq!(
        hex::encode(coordinator.verifying_key().to_bytes()),
        block.one("coordinator_public_key")
    );
    check_key_files(block);
    Keys { state, coordinator }
}

/// §7: the key files as documented load with the real loader.
fn check_key_files(block: &Block) {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = dir.path().join("KAZ.key");
    let public = dir.path().join("KAZ.pub");
    std::fs::write(&private, format!("{}\n", block.one("state_seed"))).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    std::fs::write(&public, format!("{}\n", block.one("state_public_key"))).expect("write");
    let key =
        tally::support::keys::read_signing_key(&private).expect("documented private key file");
    let pubkey =
        tally::support::keys::read_verifying_key(&public).expect("documented public key file");
    assert_eq!(key.to_bytes(), block.hex32("state_seed"));
    assert_eq!(pubkey, key.verifying_key());
    // Written by keygen exactly as documented: lowercase hex and a newline.
    let written = tempfile::tempdir().expect("tempdir");
    let (p, q) =
        tally::support::keys::write_key_pair(written.path(), "KAZ", &key).expect("write pair");
    assert_eq!(
        std::fs::read_to_string(p).expect("read"),
        format!("{}\n", block.one("state_seed"))
    );
    assert_eq!(
        std::fs::read_to_string(q).expect("read"),
        format!("{}\n", block.one("state_public_key"))
    );
}

fn check_canonical(block: &Block) -> usize {
    assert_eq!(block.one("rule"), "default");
    let rule = CanonicalRule::default();
    let mut n = 0;
    for case in block.all("case") {
        let [raw, expected]: [String; 2] = json_strings(case).try_into().expect("two strings");
        let got = rule.canonicalize(&raw);
        assert_eq!(got, expected, "canonical form of {raw:?}");
        assert_eq!(rule.canonicalize(&got), got, "idempotent on {got:?}");
        n += 1;
    }
    n
}

/// What a checked snapshot block leaves for later blocks.
struct Checked {
    digest: SnapshotDigest,
    leaf_hashes: Vec<[u8; 32]>,
    root: [u8; 32],
}

fn check_snapshot(block: &Block, keys: &Keys, chain: &BTreeMap<(String, u64), Checked>) -> Checked {
    let rule = CanonicalRule::default();
    let st = state(block.one("state"));
    let sequence: u64 = block.int("sequence");
    let as_of: i64 = block.int("as_of_unix_ms");
    let previous = SnapshotDigest(block.hex32("previous_digest"));
    let at = format!("{st} {sequence}");

    // Chain rule: sequence 1 names zeros, the next names the previous digest.
    if sequence == 1 {
        assert_eq!(previous, SnapshotDigest::GENESIS, "{at}: genesis");
    } else if let Some(prev) = chain.get(&(st.to_string(), sequence - 1)) {
        assert_eq!(previous, prev.digest, "{at}: chains to its predecessor");
    }

    // Items in input order, each followed by its expected key, leaf, leaf hash.
    let mut items: Vec<Item> = Vec::new();
    let mut expected: Vec<BTreeMap<&str, &str>> = Vec::new();
    for (name, value) in &block.lines {
        match name.as_str() {
            "item" => {
                let [model, serial, status, site, cp]: [String; 5] =
                    json_array(value).try_into().expect("five fields");
                let status: Status = status.parse().expect("status");
                let cp = (!cp.is_empty()).then(|| state(&cp));
                let item = Item::new(&model, &serial, status, &site, cp, &rule)
                    .unwrap_or_else(|e| panic!("{at}: item {model:?} {serial:?}: {e}"));
                items.push(item);
                expected.push(BTreeMap::new());
            }
            "key" | "leaf" | "leaf_hash" => {
                expected
                    .last_mut()
                    .expect("item line first")
                    .insert(name.as_str(), value.as_str());
            }
            _ => {}
        }
    }
    for (i, (item, exp)) in items.iter().zip(&expected).enumerate() {
        let key = json_array(exp["key"]);
        assert_eq!(
            [item.key.model.as_str(), item.key.serial.as_str()],
            [key[0].as_str(), key[1].as_str()],
            "{at}: item {i} canonical key"
        );
        let mut leaf = Vec::new();
        encode_leaf(item, &mut leaf);
        assert_eq!(hex::encode(&leaf), exp["leaf"], "{at}: item {i} leaf");
        assert_eq!(
            hex::encode(leaf_hash(&leaf)),
            exp["leaf_hash"],
            "{at}: item {i} leaf hash"
        );
        // The leaf parses back and passes the coordinator's content checks.
        let (parsed, len) = LeafRef::parse(&leaf).expect("leaf parses");
        assert_eq!(len, leaf.len());
        parsed.check(&rule).expect("leaf is canonical");
    }

    // Order: input positions in sorted order.
    let mut sorted = items.clone();
    sort_items(&mut sorted);
    let mut remaining: Vec<Option<&Item>> = items.iter().map(Some).collect();
    let order: Vec<String> = sorted
        .iter()
        .map(|s| {
            let pos = remaining
                .iter()
                .position(|r| *r == Some(s))
                .expect("sorted item comes from the input");
            remaining[pos] = None;
            pos.to_string()
        })
        .collect();
    assert_eq!(order.join(" "), block.one("order"), "{at}: order");

    // Root, header, digest, signature.
    let unsigned = build_snapshot(st, sequence, as_of, previous, &sorted);
    let header = unsigned.header;
    assert_eq!(header.item_count, block.int::<u64>("item_count"), "{at}");
    assert_eq!(
        hex::encode(header.items_root),
        block.one("items_root"),
        "{at}: items root"
    );
    let encoded = header.encode();
    assert_eq!(encoded.len(), HEADER_LEN);
    assert_eq!(hex::encode(encoded), block.one("header"), "{at}: header");
    assert_eq!(
        SnapshotHeader::decode(&encoded),
        Some(header),
        "{at}: decode"
    );
    let digest = header.digest();
    assert_eq!(digest.to_hex(), block.one("digest"), "{at}: digest");
    let signed = header.sign(&keys.state);
    assert_eq!(
        hex::encode(signed.signature.to_bytes()),
        block.one("signature"),
        "{at}: signature"
    );
    let from_doc = SignedHeader {
        header,
        signature: Signature::from_slice(&hex::decode(block.one("signature")).expect("hex"))
            .expect("64 bytes"),
    };
    from_doc
        .verify(&keys.state.verifying_key())
        .expect("documented signature verifies strictly");

    // The leaves, sent in any split into whole leaves, pass the coordinator's
    // stream verification: as built, all in one chunk, one leaf per chunk.
    let all: Vec<u8> = unsigned.chunks.concat();
    let singles: Vec<Vec<u8>> = leaves(&all).map(|r| r.expect("leaf").1.to_vec()).collect();
    assert_eq!(singles.len(), items.len());
    for split in [unsigned.chunks.clone(), vec![all.clone()], singles] {
        let mut v = ItemStreamVerifier::new(&header, rule.clone());
        for chunk in &split {
            v.push_chunk(chunk).expect("chunk verifies");
        }
        v.finish().expect("count and root match");
    }

    // Receipt.
    let accepted_at: i64 = block.int("accepted_at_unix_ms");
    let bytes = Receipt::encode_fields(st, sequence, &digest, accepted_at);
    assert_eq!(bytes.len(), 68);
    assert_eq!(hex::encode(&bytes), block.one("receipt"), "{at}: receipt");
    let receipt = Receipt::issue(&keys.coordinator, st, sequence, digest, accepted_at);
    assert_eq!(
        hex::encode(receipt.signature.to_bytes()),
        block.one("receipt_signature"),
        "{at}: receipt signature"
    );
    assert!(receipt.verify(&keys.coordinator.verifying_key()));

    let leaf_hashes = unsigned
        .chunks
        .iter()
        .flat_map(|c| leaves(c).map(|r| leaf_hash(r.expect("leaf").1)))
        .collect();
    Checked {
        digest,
        leaf_hashes,
        root: header.items_root,
    }
}

fn check_proof(block: &Block, chain: &BTreeMap<(String, u64), Checked>) {
    let key = (block.one("state").to_string(), block.int::<u64>("sequence"));
    let snap = chain
        .get(&key)
        .unwrap_or_else(|| panic!("proof for unknown snapshot {key:?}"));
    let index: u64 = block.int("leaf_index");
    let tree_size: u64 = block.int("tree_size");
    let path: Vec<[u8; 32]> = block.all("path").map(hex32).collect();
    let leaf = block.hex32("leaf_hash");
    let root = block.hex32("root");
    assert_eq!(tree_size, snap.leaf_hashes.len() as u64, "{key:?}");
    assert_eq!(root, snap.root, "{key:?}: proof root");
    assert_eq!(leaf, snap.leaf_hashes[index as usize], "{key:?}: leaf hash");
    let proof = inclusion_proof(&snap.leaf_hashes, index).expect("in range");
    assert_eq!(proof.path, path, "{key:?} leaf {index}: path");
    let documented = InclusionProof {
        leaf_index: index,
        tree_size,
        path,
    };
    assert!(verify_inclusion(&leaf, &documented, &root));
    let wrong = InclusionProof {
        leaf_index: index ^ 1,
        ..documented
    };
    assert!(!verify_inclusion(&leaf, &wrong, &root));
}

#[test]
fn protocol_document_vectors_match_the_code() {
    let doc = std::fs::read_to_string(DOC).expect("docs/protocol.md");
    let blocks = vector_blocks(&doc);
    let mut keys = None;
    let mut chain = BTreeMap::new();
    let (mut cases, mut snapshots, mut proofs) = (0, 0, 0);
    for block in &blocks {
        match block.one("kind") {
            "keys" => {
                assert!(keys.is_none(), "one keys block");
                keys = Some(check_keys(block));
            }
            "canonical" => cases += check_canonical(block),
            "snapshot" => {
                let k = keys.as_ref().expect("keys block before snapshots");
                let checked = check_snapshot(block, k, &chain);
                let id = (block.one("state").to_string(), block.int("sequence"));
                assert!(chain.insert(id, checked).is_none(), "duplicate snapshot");
                snapshots += 1;
            }
            "proof" => {
                check_proof(block, &chain);
                proofs += 1;
            }
            other => panic!("unknown vector kind {other:?}"),
        }
    }
    // Deleting vectors must not make the test pass vacuously.
    assert!(keys.is_some(), "keys vector");
    assert!(cases >= 10, "canonical cases: {cases}");
    assert!(snapshots >= 2, "snapshot vectors: {snapshots}");
    assert!(proofs >= 1, "proof vectors: {proofs}");
    assert!(
        chain.values().any(|c| c.leaf_hashes.is_empty()),
        "an empty snapshot vector"
    );
}

/// The document alone suffices: an independent implementation of it (Python,
/// standard library only) reproduces every vector.
#[test]
fn independent_python_implementation_agrees() {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing");
    let output = match Command::new("python3").arg(SCRIPT).arg(DOC).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "python3 is required to run {SCRIPT}, the independent implementation of \
             docs/protocol.md, and was not found: install Debian's python3 \
             (apt-get install python3), as .ci/run does"
        ),
        Err(e) => panic!("running python3 {SCRIPT}: {e}"),
    };
    assert!(
        output.status.success(),
        "{SCRIPT} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
