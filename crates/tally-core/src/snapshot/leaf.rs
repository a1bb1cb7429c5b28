//! The item leaf encoding: the bytes of one item that enter the Merkle tree.
//!
//! ```text
//! 0x01                 version
//! str canonical_model
//! str canonical_serial
//! str model            raw, exactly as the ministry wrote it
//! str serial           raw
//! u8  status           1 in_service, 2 in_storage, 3 transferred_out,
//!                      4 expended, 5 destroyed, 6 lost
//! str site
//! str counterparty     empty, or a 3-letter state code
//! ```
//! where `str` is a u16 big-endian byte length followed by that many bytes of
//! UTF-8. Leaves are self-delimiting, so a chunk is just leaves back to back.
//!
//! The canonical forms are inside the signed leaf so that an inclusion proof
//! proves the item key directly; the coordinator recomputes them from the raw
//! fields and rejects a leaf whose canonical forms do not match its rule.
//!
//! Order: by canonical model, then canonical serial (each compared as UTF-8
//! bytes), then by the whole leaf encoding. Rows with one item key therefore
//! sit next to each other.

use std::cmp::Ordering;

use crate::item::{Item, ItemError, Status, check_fields};
use crate::serial::{CanonicalError, CanonicalRule};
use crate::state::StateCode;

/// Version byte that starts every leaf encoding.
pub(crate) const LEAF_VERSION: u8 = 1;

/// Why bytes are not a valid leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("leaf is truncated (the chunk ends inside it)")]
    Truncated,
    #[error("unknown leaf version {0} (expected 1)")]
    UnknownVersion(u8),
    #[error("field {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("unknown status code {0} (expected 1..=6)")]
    UnknownStatus(u8),
    #[error("counterparty '{0}' is not a state code")]
    BadCounterparty(String),
    #[error("{field} '{found}' is not the canonical form of the raw value (expected '{expected}')")]
    NonCanonical {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Item(#[from] crate::item::ItemError),
}

/// A leaf parsed in place: borrowed fields, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRef<'a> {
    pub canonical_model: &'a str,
    pub canonical_serial: &'a str,
    pub model: &'a str,
    pub serial: &'a str,
    pub status: Status,
    pub site: &'a str,
    pub counterparty: Option<StateCode>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Item::new bounds raw fields to MAX_FIELD_BYTES, so canonical forms too
    // stay far below u16::MAX; saturate rather than wrap if a caller ever
    // bypasses it, so the leaf stays parseable.
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the leaf encoding of `item` to `out`.
pub fn encode_leaf(item: &Item, out: &mut Vec<u8>) {
    out.push(LEAF_VERSION);
    put_str(out, item.key.model.as_str());
    put_str(out, item.key.serial.as_str());
    put_str(out, &item.model);
    put_str(out, &item.serial);
    out.push(item.status.code());
    put_str(out, &item.site);
    put_str(out, item.counterparty.as_ref().map_or("", |c| c.as_str()));
}

/// The defined snapshot order between two items (see the module docs).
pub fn item_order(a: &Item, b: &Item) -> Ordering {
    a.key.cmp(&b.key).then_with(|| {
        // Same key: only now pay for encoding, to order the duplicates.
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        encode_leaf(a, &mut ea);
        encode_leaf(b, &mut eb);
        ea.cmp(&eb)
    })
}

/// Bytes of `model 0x00 serial` kept inline for sorting; longer keys are
/// finished by [`item_order`].
const SORT_PREFIX: usize = 24;

/// `model 0x00 serial`, truncated or zero-padded to [`SORT_PREFIX`] bytes.
/// Without NUL bytes in the key, comparing these arrays agrees with
/// [`item_order`] wherever they differ.
fn sort_prefix(item: &Item) -> [u8; SORT_PREFIX] {
    let mut p = [0u8; SORT_PREFIX];
    let model = item.key.model.as_str().as_bytes();
    let serial = item.key.serial.as_str().as_bytes();
    let m = model.len().min(SORT_PREFIX);
    p[..m].copy_from_slice(&model[..m]);
    if m + 1 < SORT_PREFIX {
        let s = serial.len().min(SORT_PREFIX - m - 1);
        p[m + 1..m + 1 + s].copy_from_slice(&serial[..s]);
    }
    p
}

/// Sorts items into the defined snapshot order, on all cores.
///
/// Items are large and their keys live on the heap, so this sorts compact
/// (inline key prefix, index) pairs, then moves each item once by following
/// the permutation's cycles.
pub fn sort_items(items: &mut [Item]) {
    use rayon::prelude::*;
    let has_nul =
        |i: &Item| i.key.model.as_str().contains('\0') || i.key.serial.as_str().contains('\0');
    let Ok(len) = u32::try_from(items.len()) else {
        items.par_sort_unstable_by(item_order);
        return;
    };
    if items.par_iter().any(has_nul) {
        items.par_sort_unstable_by(item_order);
        return;
    }
    let mut order: Vec<([u8; SORT_PREFIX], u32)> = items
        .par_iter()
        .zip(0..len)
        .map(|(item, i)| (sort_prefix(item), i))
        .collect();
    order.par_sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| item_order(&items[a.1 as usize], &items[b.1 as usize]))
    });
    let mut order: Vec<u32> = order.into_iter().map(|(_, i)| i).collect();
    // Position i must receive the item now at order[i].
    for start in 0..items.len() {
        let mut current = start;
        loop {
            let next = order[current] as usize;
            order[current] = current as u32;
            if next == start {
                break;
            }
            items.swap(current, next);
            current = next;
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, LeafError> {
        let b = *self.buf.get(self.at).ok_or(LeafError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, LeafError> {
        let len_bytes = self
            .buf
            .get(self.at..self.at + 2)
            .ok_or(LeafError::Truncated)?;
        let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let start = self.at + 2;
        let bytes = self
            .buf
            .get(start..start + len)
            .ok_or(LeafError::Truncated)?;
        self.at = start + len;
        std::str::from_utf8(bytes).map_err(|_| LeafError::InvalidUtf8(field))
    }
}

/// The extent and item key of a leaf, read from its length prefixes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafBounds<'a> {
    /// Length of the whole leaf encoding in bytes.
    pub len: usize,
    /// Canonical model and serial, as bytes (compare them as bytes: that is
    /// the defined order).
    pub key: (&'a [u8], &'a [u8]),
}

/// Finds where the leaf at the start of `buf` ends and its item key, without
/// checking UTF-8 or the status code: for walking leaves that were verified
/// when they were accepted (several times faster than [`LeafRef::parse`]).
/// Fails only if the version byte is wrong or a length runs past `buf`.
pub fn leaf_bounds(buf: &[u8]) -> Result<LeafBounds<'_>, LeafError> {
    let version = *buf.first().ok_or(LeafError::Truncated)?;
    if version != LEAF_VERSION {
        return Err(LeafError::UnknownVersion(version));
    }
    let mut at = 1;
    let field = |at: &mut usize| -> Result<&[u8], LeafError> {
        let len = buf.get(*at..*at + 2).ok_or(LeafError::Truncated)?;
        let start = *at + 2;
        let end = start + u16::from_be_bytes([len[0], len[1]]) as usize;
        let bytes = buf.get(start..end).ok_or(LeafError::Truncated)?;
        *at = end;
        Ok(bytes)
    };
    let model = field(&mut at)?;
    let serial = field(&mut at)?;
    field(&mut at)?; // raw model
    field(&mut at)?; // raw serial
    at += 1; // status
    field(&mut at)?; // site
    field(&mut at)?; // counterparty
    Ok(LeafBounds {
        len: at,
        key: (model, serial),
    })
}

impl<'a> LeafRef<'a> {
    /// Parses the leaf at the start of `buf`; returns it and its length in bytes.
    /// Checks the structure only; see [`LeafRef::check`] for the content rules.
    pub fn parse(buf: &'a [u8]) -> Result<(LeafRef<'a>, usize), LeafError> {
        let mut r = Reader { buf, at: 0 };
        let version = r.byte()?;
        if version != LEAF_VERSION {
            return Err(LeafError::UnknownVersion(version));
        }
        let canonical_model = r.str("canonical_model")?;
        let canonical_serial = r.str("canonical_serial")?;
        let model = r.str("model")?;
        let serial = r.str("serial")?;
        let code = r.byte()?;
        let status = Status::from_code(code).ok_or(LeafError::UnknownStatus(code))?;
        let site = r.str("site")?;
        let counterparty = match r.str("counterparty")? {
            "" => None,
            s => Some(StateCode::parse(s).map_err(|_| LeafError::BadCounterparty(s.to_string()))?),
        };
        Ok((
            LeafRef {
                canonical_model,
                canonical_serial,
                model,
                serial,
                status,
                site,
                counterparty,
            },
            r.at,
        ))
    }

    /// Checks the content rules: canonical forms match `rule` applied to the raw
    /// fields, and the field rules of [`Item::new`] hold. Allocation-free for
    /// ASCII leaves: this runs once per item on the ingest path.
    pub fn check(&self, rule: &CanonicalRule) -> Result<(), LeafError> {
        check_fields(
            self.model,
            self.serial,
            self.status,
            self.site,
            self.counterparty,
        )?;
        for (field, raw, found, empty) in [
            (
                "canonical_model",
                self.model,
                self.canonical_model,
                ItemError::Model(CanonicalError::Empty),
            ),
            (
                "canonical_serial",
                self.serial,
                self.canonical_serial,
                ItemError::Serial(CanonicalError::Empty),
            ),
        ] {
            if found.is_empty() || !rule.is_canonical_form(raw, found) {
                let expected = rule.canonicalize(raw);
                if expected.is_empty() {
                    return Err(empty.into());
                }
                return Err(LeafError::NonCanonical {
                    field,
                    expected,
                    found: found.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Builds the owned item, computing the key from the raw fields under `rule`.
    pub fn to_item(&self, rule: &CanonicalRule) -> Result<Item, LeafError> {
        Ok(Item::new(
            self.model,
            self.serial,
            self.status,
            self.site,
            self.counterparty,
            rule,
        )?)
    }

    /// The item key as written in the leaf (trusted once [`LeafRef::check`] passed).
    pub fn key_strs(&self) -> (&'a str, &'a str) {
        (self.canonical_model, self.canonical_serial)
    }
}

/// Compares two encoded leaves in the defined snapshot order.
pub fn compare_leaves(
    a: &LeafRef<'_>,
    a_bytes: &[u8],
    b: &LeafRef<'_>,
    b_bytes: &[u8],
) -> Ordering {
    a.key_strs()
        .cmp(&b.key_strs())
        .then_with(|| a_bytes.cmp(b_bytes))
}

/// Iterates over the leaves of a chunk: each leaf with its encoded bytes.
pub fn leaves(chunk: &[u8]) -> impl Iterator<Item = Result<(LeafRef<'_>, &[u8]), LeafError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= chunk.len() {
            return None;
        }
        match LeafRef::parse(&chunk[at..]) {
            Ok((leaf, len)) => {
                let bytes = &chunk[at..at + len];
                at += len;
                Some(Ok((leaf, bytes)))
            }
            Err(e) => {
                at = chunk.len();
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(model: &str, serial: &str, status: Status, cp: Option<&str>) -> Item {
        Item::new(
            model,
            serial,
            status,
            "Depot 7",
            cp.map(|c| c.parse().unwrap()),
            &CanonicalRule::default(),
        )
        .unwrap()
    }

    #[test]
    fn leaf_round_trips_through_parse() {
        let it = item("9K38", "ka-0 12", Status::TransferredOut, Some("KAZ"));
        let mut buf = Vec::new();
        encode_leaf(&it, &mut buf);
        let (leaf, len) = LeafRef::parse(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(leaf.model, "9K38");
        assert_eq!(leaf.serial, "ka-0 12");
        assert_eq!(leaf.status, Status::TransferredOut);
        assert_eq!(leaf.counterparty, Some("KAZ".parse().unwrap()));
        leaf.check(&CanonicalRule::default()).unwrap();
        assert_eq!(leaf.to_item(&CanonicalRule::default()).unwrap(), it);
    }

    #[test]
    fn every_strict_prefix_of_a_leaf_is_truncated() {
        let mut buf = Vec::new();
        encode_leaf(&item("9M39", "A1", Status::InService, None), &mut buf);
        for n in 0..buf.len() {
            assert_eq!(
                LeafRef::parse(&buf[..n]).unwrap_err(),
                LeafError::Truncated,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn non_canonical_key_in_leaf_is_rejected() {
        let mut buf = Vec::new();
        let mut it = item("9M39", "A1", Status::InService, None);
        it.serial = "b2".into(); // raw no longer matches the canonical A1
        encode_leaf(&it, &mut buf);
        let (leaf, _) = LeafRef::parse(&buf).unwrap();
        assert!(matches!(
            leaf.check(&CanonicalRule::default()),
            Err(LeafError::NonCanonical {
                field: "canonical_serial",
                ..
            })
        ));
    }

    #[test]
    fn bad_version_status_and_counterparty_are_named() {
        let mut buf = Vec::new();
        encode_leaf(&item("9M39", "A1", Status::InService, None), &mut buf);
        let mut v = buf.clone();
        v[0] = 2;
        assert_eq!(
            LeafRef::parse(&v).unwrap_err(),
            LeafError::UnknownVersion(2)
        );
        // status byte sits right before the site field: find it from the end.
        let site_and_cp = 2 + "Depot 7".len() + 2;
        let mut s = buf.clone();
        let at = s.len() - site_and_cp - 1;
        s[at] = 9;
        assert_eq!(LeafRef::parse(&s).unwrap_err(), LeafError::UnknownStatus(9));
    }

    #[test]
    fn sort_puts_one_key_together_and_orders_by_key() {
        let mut items = vec![
            item("9M39", "B", Status::InService, None),
            item("9K38", "Z", Status::InService, None),
            item("9M39", "A", Status::Lost, None),
            item("9M39", "A", Status::InService, None),
        ];
        sort_items(&mut items);
        let keys: Vec<String> = items.iter().map(|i| i.key.to_string()).collect();
        assert_eq!(keys, ["9K38/Z", "9M39/A", "9M39/A", "9M39/B"]);
        // Duplicates are ordered by their encodings: in_service (1) before lost (6).
        assert_eq!(items[1].status, Status::InService);
    }

    proptest::proptest! {
        /// The fast prefix sort agrees with a plain sort by `item_order`,
        /// including long keys (past the inline prefix), duplicates, NUL
        /// bytes and non-ASCII serials.
        #[test]
        fn sort_items_agrees_with_the_reference_order(
            rows in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["9K38", "9M39", "A", "AB", "MODEL-WITH-A-VERY-LONG-NAME-X"]),
                    "[A-C\\x00к-]{1,30}",
                    proptest::sample::select(Status::ALL.to_vec()),
                ),
                0..200,
            )
        ) {
            let rule = CanonicalRule::default();
            let mut items: Vec<Item> = rows
                .iter()
                .filter_map(|(m, s, st)| {
                    let cp = (*st == Status::TransferredOut).then(|| "KAZ".parse().unwrap());
                    Item::new(m, s, *st, "", cp, &rule).ok()
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_by(item_order);
            sort_items(&mut items);
            proptest::prop_assert_eq!(items, expected);
        }
    }

    #[test]
    fn leaves_iterates_a_chunk_and_stops_at_garbage() {
        let mut chunk = Vec::new();
        encode_leaf(&item("9M39", "A", Status::InService, None), &mut chunk);
        encode_leaf(&item("9M39", "B", Status::InStorage, None), &mut chunk);
        assert_eq!(leaves(&chunk).filter(|r| r.is_ok()).count(), 2);
        chunk.push(7);
        let all: Vec<_> = leaves(&chunk).collect();
        assert_eq!(all.len(), 3);
        assert!(all[2].is_err());
    }

    #[test]
    fn leaf_bounds_agrees_with_the_full_parse_and_detects_truncation() {
        let mut chunk = Vec::new();
        encode_leaf(&item("9M39", "ка-1", Status::InService, None), &mut chunk);
        encode_leaf(
            &item("9K38", "B 2", Status::TransferredOut, Some("BLR")),
            &mut chunk,
        );
        let mut at = 0;
        for leaf in leaves(&chunk) {
            let (leaf, bytes) = leaf.unwrap();
            let b = leaf_bounds(&chunk[at..]).unwrap();
            assert_eq!(b.len, bytes.len());
            let (m, s) = leaf.key_strs();
            assert_eq!(b.key, (m.as_bytes(), s.as_bytes()));
            for cut in 0..bytes.len() {
                assert_eq!(
                    leaf_bounds(&bytes[..cut]).unwrap_err(),
                    LeafError::Truncated,
                    "cut at {cut}"
                );
            }
            at += b.len;
        }
        assert_eq!(at, chunk.len());
        assert_eq!(leaf_bounds(&[2]).unwrap_err(), LeafError::UnknownVersion(2));
    }
}
