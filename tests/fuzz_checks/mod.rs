//! The properties checked by the cargo-fuzz targets (`fuzz/`) and by the
//! property tests in `fuzzing.rs`: one copy, compiled into both. Each check
//! takes raw input and panics when a property fails.
//!
//! The fuzz crate includes this file with `#[path]`, so it may only use
//! what both `tests/` and `fuzz/Cargo.toml` depend on.

use std::io::Read;

use tally::inventory_csv::{ExportError, ExportOptions, HEADER, read_export};
use tally::item::Item;
use tally::merkle::MerkleBuilder;
use tally::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, HYPHEN_VARIANTS};
use tally::snapshot::leaf::{LeafRef, compare_leaves, encode_leaf, item_order, leaf_bounds};
use tally::snapshot::{HEADER_DOMAIN, HEADER_LEN, ItemStreamVerifier, SnapshotHeader};
use tally::state::StateSet;

pub mod submit;

/// A reader that hands out at most `step` bytes per call, to move the CSV
/// reader's buffer boundaries around.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The export reader on arbitrary bytes. The first byte picks the problem
/// cap and the read size; the rest is the file.
///
/// Properties: it never panics; reading in small pieces gives the same
/// result; an accepted file's items are valid under the rule and read back
/// identically once written out again; a rejected file lists at least one
/// problem, at most the cap, in line order, and a smaller cap lists a prefix
/// of the same problems.
pub fn check_export_reader(data: &[u8]) {
    let Some((&control, file)) = data.split_first() else {
        return;
    };
    let rule = CanonicalRule::default();
    let states = StateSet::members();
    let mut opts = ExportOptions::new(&rule, &states);
    opts.max_problems = 1 + usize::from(control & 0x0F);
    let step = 1 + usize::from(control >> 4);

    let whole = read_export("fuzz.csv", file, &opts);
    let trickled = read_export("fuzz.csv", Trickle { data: file, step }, &opts);
    assert_eq!(
        summary(&whole),
        summary(&trickled),
        "result depends on read size"
    );

    match whole {
        Ok(items) => {
            for item in &items {
                let again = Item::new(
                    &item.model,
                    &item.serial,
                    item.status,
                    &item.site,
                    item.counterparty,
                    &rule,
                )
                .expect("an accepted item is valid");
                assert_eq!(&again, item);
            }
            let rewritten = write_export(&items);
            let reread = read_export("rewritten.csv", rewritten.as_slice(), &opts)
                .unwrap_or_else(|e| panic!("rewritten export rejected: {e}"));
            assert_eq!(
                reread, items,
                "items change when written out and read again"
            );
        }
        Err(err @ ExportError::Rows { .. }) => {
            let ExportError::Rows { problems, more, .. } = &err else {
                unreachable!()
            };
            assert!(!problems.is_empty(), "rejected without a problem: {err}");
            assert!(problems.len() <= opts.max_problems);
            assert!(*more == 0 || problems.len() == opts.max_problems);
            assert!(
                problems.windows(2).all(|w| w[0].line <= w[1].line),
                "problems out of line order: {problems:?}"
            );
            assert!(!err.to_string().is_empty());
            let mut one = opts;
            one.max_problems = 1;
            let first = read_export("fuzz.csv", file, &one);
            assert_eq!(
                first.as_ref().err().map(|e| e.problems().to_vec()),
                Some(problems[..1].to_vec()),
                "a smaller cap lists other problems"
            );
        }
        Err(ExportError::Io { .. }) => panic!("reading from memory cannot fail with I/O"),
    }
}

/// What a read came to, comparable across reads.
fn summary(r: &Result<Vec<Item>, ExportError>) -> Result<&[Item], String> {
    r.as_deref().map_err(|e| e.to_string())
}

/// Writes items as an export file with the csv crate's quoting.
fn write_export(items: &[Item]) -> Vec<u8> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(HEADER).expect("write to memory");
    for item in items {
        let counterparty = item.counterparty.map(|c| c.to_string()).unwrap_or_default();
        out.write_record([
            item.model.as_str(),
            item.serial.as_str(),
            item.status.as_str(),
            item.site.as_str(),
            counterparty.as_str(),
        ])
        .expect("write to memory");
    }
    out.into_inner().expect("flush to memory")
}

/// Canonicalisation of arbitrary text. The first byte picks the rule
/// (folding on or off, one of several `remove_chars`); the rest, as UTF-8
/// (invalid sequences replaced), is the raw value.
///
/// Properties: the rule is idempotent; the ASCII and Cyrillic shortcuts agree
/// with the step-by-step rule; `is_canonical_form` accepts exactly the
/// canonical form; nothing removable is left in it; `from_raw` and
/// `from_canonical` agree with it; with the default removals, a space or a
/// hyphen inserted anywhere changes nothing, and neither does ASCII case.
pub fn check_serial_canonical(data: &[u8]) {
    let Some((&control, raw)) = data.split_first() else {
        return;
    };
    let raw = String::from_utf8_lossy(raw);
    let remove_chars = ["-", "", "-/", "/._#"][usize::from(control >> 1) & 3];
    let rule = CanonicalRule {
        fold_lookalikes: control & 1 == 1,
        remove_chars: remove_chars.to_string(),
    };
    assert_eq!(rule.check(), Ok(()));
    check_canonical_under(&rule, &raw, usize::from(control >> 3));
}

/// `rotation` picks which removable character goes where in the insertion
/// check (see below).
fn check_canonical_under(rule: &CanonicalRule, raw: &str, rotation: usize) {
    let canonical = rule.canonicalize(raw);
    assert_eq!(
        rule.canonicalize(&canonical),
        canonical,
        "not idempotent on {raw:?}"
    );
    assert_eq!(
        rule.canonicalize_general(raw),
        canonical,
        "a shortcut disagrees with the step-by-step rule on {raw:?}"
    );
    assert!(rule.is_canonical_form(raw, &canonical));
    assert!(!rule.is_canonical_form(raw, &format!("{canonical}0")));
    if let Some((cut, _)) = canonical.char_indices().last() {
        assert!(!rule.is_canonical_form(raw, &canonical[..cut]));
    }
    let hyphens = rule.remove_chars.contains('-');
    for c in canonical.chars() {
        assert!(
            !(tally::serial::is_removed_space(c)
                || rule.remove_chars.contains(c)
                || (hyphens && HYPHEN_VARIANTS.contains(&c))),
            "{c:?} left in the canonical form {canonical:?} of {raw:?}"
        );
    }
    assert_eq!(
        CanonicalSerial::from_raw(raw, rule)
            .ok()
            .map(|s| s.to_string()),
        (!canonical.is_empty()).then(|| canonical.clone())
    );
    assert_eq!(
        CanonicalModel::from_canonical(&canonical, rule).is_some(),
        !canonical.is_empty()
    );

    // Removable characters inserted anywhere change nothing, including
    // between a letter and its combining mark. One character per point,
    // rotated by the control byte, so that the fuzzer can steer any of them
    // to any point without paying for all of them at every point.
    let mut separators = vec![' ', '\u{00A0}', '\u{200B}'];
    if rule.remove_chars.contains('-') {
        separators.extend(['\u{2013}', '\u{00AD}']);
    }
    separators.extend(rule.remove_chars.chars());
    let chars: Vec<char> = raw.chars().collect();
    for at in insertion_points(chars.len()) {
        let sep = separators[(at + rotation) % separators.len()];
        let spaced: String = chars[..at]
            .iter()
            .chain(std::iter::once(&sep))
            .chain(&chars[at..])
            .collect();
        assert_eq!(
            rule.canonicalize(&spaced),
            canonical,
            "inserting {sep:?} at {at} into {raw:?} changes its canonical form"
        );
    }
    if raw.is_ascii() && !rule.remove_chars.chars().any(|c| c.is_ascii_alphabetic()) {
        assert_eq!(rule.canonicalize(&raw.to_ascii_lowercase()), canonical);
    }
}

/// Where to insert a removable character into a text of `len` characters:
/// everywhere in a short text; in a long one, near both ends and at evenly
/// spaced points between. Trying every point of a 4,096-character input cost
/// about 170 ms per fuzz input (quadratic), which kept the fuzzer at about 11
/// inputs a second; serials are far shorter than that.
pub fn insertion_points(len: usize) -> Vec<usize> {
    const EVERY_POINT_UP_TO: usize = 96;
    const AT_EACH_END: usize = 32;
    if len <= EVERY_POINT_UP_TO {
        return (0..=len).collect();
    }
    let step = len / AT_EACH_END;
    (0..AT_EACH_END)
        .chain((AT_EACH_END..len - AT_EACH_END).step_by(step))
        .chain(len - AT_EACH_END..=len)
        .collect()
}

/// The snapshot decoders on arbitrary bytes: the header decoder, the leaf
/// parser and bounds reader, and the streaming item verifier.
///
/// Properties: no panic; a decoded header encodes back to exactly its bytes;
/// `leaf_bounds` agrees with the full parse; a leaf that passes `check`
/// becomes an item whose encoding is exactly the leaf; the leaf order agrees
/// with the item order; the verifier accepts the parsed leaves (split into
/// chunks anywhere between leaves) exactly when every leaf checks and they
/// are in order, given the right count and root.
pub fn check_snapshot_decode(data: &[u8]) {
    // The header decoder on the input as it is, and on the input behind the
    // right prefix and cut to the right length (to get past the cheap checks).
    check_header(data);
    let mut framed = HEADER_DOMAIN.to_vec();
    framed.extend_from_slice(data);
    framed.resize(HEADER_LEN, 0);
    check_header(&framed);

    let rule = CanonicalRule::default();
    let mut at = 0;
    let mut parsed: Vec<(LeafRef<'_>, &[u8])> = Vec::new();
    let mut all_check = true;
    while at < data.len() {
        let rest = &data[at..];
        let bounds = leaf_bounds(rest);
        let (leaf, len) = match LeafRef::parse(rest) {
            Ok(ok) => ok,
            Err(_) => break,
        };
        let bounds = bounds.expect("leaf_bounds fails where the full parse succeeds");
        assert_eq!(bounds.len, len);
        assert_eq!(
            bounds.key,
            (
                leaf.canonical_model.as_bytes(),
                leaf.canonical_serial.as_bytes()
            )
        );
        assert!(len > 0 && len <= rest.len());
        let bytes = &rest[..len];
        match leaf.check(&rule) {
            Ok(()) => {
                let item = leaf
                    .to_item(&rule)
                    .expect("a leaf that checks makes an item");
                let mut encoded = Vec::new();
                encode_leaf(&item, &mut encoded);
                assert_eq!(encoded, bytes, "a checked leaf re-encodes differently");
            }
            Err(_) => all_check = false,
        }
        parsed.push((leaf, bytes));
        at += len;
    }

    let in_order = parsed
        .windows(2)
        .all(|w| compare_leaves(&w[0].0, w[0].1, &w[1].0, w[1].1).is_le());
    if all_check {
        for w in parsed.windows(2) {
            let a = w[0].0.to_item(&rule).expect("checked");
            let b = w[1].0.to_item(&rule).expect("checked");
            assert_eq!(
                compare_leaves(&w[0].0, w[0].1, &w[1].0, w[1].1),
                item_order(&a, &b),
                "leaf order and item order disagree"
            );
        }
    }
    if parsed.is_empty() {
        return;
    }
    let mut tree = MerkleBuilder::new();
    for (_, bytes) in &parsed {
        tree.push_leaf(bytes);
    }
    let header = SnapshotHeader {
        state: tally::state::StateCode::parse("RUS").expect("state code"),
        sequence: 1,
        as_of_unix_ms: 0,
        previous_digest: tally::snapshot::SnapshotDigest::GENESIS,
        item_count: parsed.len() as u64,
        items_root: tree.root(),
    };
    // Chunks of 1, 2, 3, ... leaves: boundaries at different places.
    let mut verifier = ItemStreamVerifier::new(&header, rule.clone());
    let mut verdict = Ok(());
    let mut rest = &parsed[..];
    let mut size = 1;
    while !rest.is_empty() && verdict.is_ok() {
        let take = size.min(rest.len());
        let chunk: Vec<u8> = rest[..take]
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        verdict = verifier
            .push_chunk(&chunk)
            .map(|n| assert_eq!(n, take as u64));
        rest = &rest[take..];
        size += 1;
    }
    let verdict = verdict.and_then(|()| verifier.finish());
    assert_eq!(
        verdict.is_ok(),
        all_check && in_order,
        "verifier verdict {verdict:?} on {} leaves (all check: {all_check}, in order: {in_order})",
        parsed.len()
    );
}

fn check_header(bytes: &[u8]) {
    match SnapshotHeader::decode(bytes) {
        Some(header) => {
            assert_eq!(
                header.encode().as_slice(),
                bytes,
                "header does not round-trip"
            );
            assert_eq!(SnapshotHeader::decode(&header.encode()), Some(header));
        }
        None => {
            let well_framed = bytes.len() == HEADER_LEN && bytes.starts_with(HEADER_DOMAIN);
            let state = bytes.get(HEADER_DOMAIN.len()..HEADER_DOMAIN.len() + 3);
            assert!(
                !well_framed || !state.is_some_and(|s| s.iter().all(u8::is_ascii_uppercase)),
                "a well-formed header encoding was refused"
            );
        }
    }
}
