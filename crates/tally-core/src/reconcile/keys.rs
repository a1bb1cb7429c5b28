//! Interning of item keys: every distinct (canonical model, canonical serial)
//! gets a dense `KeyId`, so per-state facts can live in plain vectors.
//!
//! Keys are stored back to back in one byte arena with a 16-byte span each
//! and a hash table of ids: about 20 bytes plus the key's length per key,
//! instead of two heap strings per key and per map.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

use crate::serial::{CanonicalModel, CanonicalSerial, ItemKey};

pub(crate) type KeyId = u32;

#[derive(Clone, Copy)]
struct Span {
    start: u64,
    model_len: u32,
    serial_len: u32,
}

#[derive(Default)]
pub(crate) struct KeyTable {
    arena: Vec<u8>,
    spans: Vec<Span>,
    index: HashTable<KeyId>,
    hasher: DefaultHashBuilder,
}

impl KeyTable {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    fn hash(&self, model: &str, serial: &str) -> u64 {
        self.hasher.hash_one((model, serial))
    }

    /// The key's two parts, borrowed from the arena.
    pub(crate) fn parts(&self, id: KeyId) -> (&str, &str) {
        // The arena holds only bytes copied from `&str`s at these boundaries.
        span_parts(&self.arena, self.spans[id as usize])
    }

    pub(crate) fn item_key(&self, id: KeyId) -> ItemKey {
        let (model, serial) = self.parts(id);
        ItemKey {
            model: CanonicalModel::from_trusted(model),
            serial: CanonicalSerial::from_trusted(serial),
        }
    }

    pub(crate) fn get(&self, model: &str, serial: &str) -> Option<KeyId> {
        let hash = self.hash(model, serial);
        self.index
            .find(hash, |&id| self.parts(id) == (model, serial))
            .copied()
    }

    /// The id of the key, adding it if it is new.
    pub(crate) fn intern(&mut self, model: &str, serial: &str) -> KeyId {
        let hash = self.hash(model, serial);
        let Self {
            arena,
            spans,
            index,
            hasher,
        } = self;
        let parts = |id: KeyId| {
            let span = spans[id as usize];
            let start = span.start as usize;
            let mid = start + span.model_len as usize;
            (
                &arena[start..mid],
                &arena[mid..mid + span.serial_len as usize],
            )
        };
        if let Some(&id) = index.find(hash, |&id| {
            parts(id) == (model.as_bytes(), serial.as_bytes())
        }) {
            return id;
        }
        let id = spans.len() as KeyId;
        spans.push(Span {
            start: arena.len() as u64,
            model_len: model.len() as u32,
            serial_len: serial.len() as u32,
        });
        arena.extend_from_slice(model.as_bytes());
        arena.extend_from_slice(serial.as_bytes());
        let rehash = |&id: &KeyId| hasher.hash_one(span_parts(arena, spans[id as usize]));
        index.insert_unique(hash, id, rehash);
        id
    }
}

/// The two parts of a key in an arena whose spans were checked as UTF-8.
fn span_parts(arena: &[u8], span: Span) -> (&str, &str) {
    let start = span.start as usize;
    let mid = start + span.model_len as usize;
    let end = mid + span.serial_len as usize;
    (
        std::str::from_utf8(&arena[start..mid]).unwrap_or_default(),
        std::str::from_utf8(&arena[mid..end]).unwrap_or_default(),
    )
}

impl KeyTable {
    /// The key bytes back to back, in id order, and each key's model and
    /// serial lengths: what a checkpoint keeps.
    pub(crate) fn raw_parts(&self) -> (&[u8], impl Iterator<Item = (u32, u32)> + '_) {
        (
            &self.arena,
            self.spans.iter().map(|s| (s.model_len, s.serial_len)),
        )
    }

    /// A table from [`KeyTable::raw_parts`]: the same ids for the same keys.
    /// `None` if a length runs past the arena, a part is not UTF-8 or a key
    /// appears twice.
    pub(crate) fn from_raw_parts(
        arena: Vec<u8>,
        lengths: impl ExactSizeIterator<Item = (u32, u32)>,
    ) -> Option<KeyTable> {
        let mut table = KeyTable {
            spans: Vec::with_capacity(lengths.len()),
            index: HashTable::with_capacity(lengths.len()),
            arena: Vec::new(),
            hasher: DefaultHashBuilder::default(),
        };
        let mut start = 0usize;
        for (model_len, serial_len) in lengths {
            let mid = start.checked_add(model_len as usize)?;
            let end = mid.checked_add(serial_len as usize)?;
            let model = std::str::from_utf8(arena.get(start..mid)?).ok()?;
            let serial = std::str::from_utf8(arena.get(mid..end)?).ok()?;
            let KeyTable {
                spans,
                index,
                hasher,
                ..
            } = &mut table;
            let hash = hasher.hash_one((model, serial));
            if index
                .find(hash, |&other| {
                    span_parts(&arena, spans[other as usize]) == (model, serial)
                })
                .is_some()
            {
                return None;
            }
            let id = spans.len() as KeyId;
            spans.push(Span {
                start: start as u64,
                model_len,
                serial_len,
            });
            index.insert_unique(hash, id, |&other| {
                hasher.hash_one(span_parts(&arena, spans[other as usize]))
            });
            start = end;
        }
        if start != arena.len() {
            return None;
        }
        table.arena = arena;
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_distinguishes_the_split() {
        let mut t = KeyTable::default();
        let a = t.intern("9K38", "A1");
        let b = t.intern("9K3", "8A1"); // same bytes, different split
        assert_ne!(a, b);
        assert_eq!(t.intern("9K38", "A1"), a);
        assert_eq!(t.get("9K3", "8A1"), Some(b));
        assert_eq!(t.get("9K38", "A2"), None);
        assert_eq!(t.parts(b), ("9K3", "8A1"));
        for i in 0..10_000 {
            t.intern("M", &format!("S{i}"));
        }
        assert_eq!(t.len(), 10_002);
        assert_eq!(t.parts(t.get("M", "S9999").unwrap()), ("M", "S9999"));
        assert_eq!(t.item_key(a).to_string(), "9K38/A1");
    }
}
