//! Engine checkpoints: the whole derived state written out and read back,
//! so that a restart does not replay every stored snapshot.
//!
//! A checkpoint is exact: an engine read back from one holds the same keys
//! under the same ids, the same records and the same open alerts, so it
//! continues exactly as the engine that wrote it would have. Whoever keeps
//! the file decides whether it still describes their snapshots (the
//! coordinator compares each state's latest snapshot with its store);
//! this module only guarantees that what it reads back is what was written.
//!
//! # Format (version 2: a last mention also names the snapshot that dropped the key)
//! Integers are little-endian. A *blob* is an 8-byte length and that many
//! bytes.
//!
//! | part | content |
//! | --- | --- |
//! | magic | the 8 bytes `TALLYENG` |
//! | version | 4 bytes, [`FORMAT_VERSION`] |
//! | meta | blob: JSON of the writing program's version, the configuration, the caller's data and every record except the large per-key arrays |
//! | key lengths | blob: per key in id order, the model's and the serial's byte length as LEB128 varints |
//! | key bytes | blob: every key's model and serial bytes back to back |
//! | states | per state of the meta, in its order: a blob of its latest snapshot's key ids (4 bytes each) and a blob of their cells (1 byte each) |
//! | hints | blob: one byte per key |
//! | checksum | SHA-256 of everything before it (32 bytes) |
//!
//! The checksum finds a torn or damaged file; it is not a signature (the
//! file is derived data on the coordinator's own disk, like its sled trees).
//! Snapshot references in the meta are indices into one table, so the large
//! record maps cost a few bytes per entry.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;
use crate::snapshot::SnapshotDigest;

/// Version of the file layout and of the records in it. A checkpoint also
/// names the program version that wrote it and is used only by that
/// version; bump this when the engine's records or rules change meaning
/// without a version change (during development).
pub const FORMAT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"TALLYENG";

/// This program, as a checkpoint names its writer.
const WRITER: &str = concat!("tally ", env!("CARGO_PKG_VERSION"));

/// Why a checkpoint could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading the checkpoint: {0}")]
    Io(#[from] io::Error),
    #[error("not an engine checkpoint (wrong magic bytes)")]
    NotACheckpoint,
    #[error("checkpoint format version {found}, this build reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("checkpoint checksum does not match: the file is damaged or incomplete")]
    Checksum,
    #[error(
        "checkpoint was written with other reconciliation settings (transfer grace or cadences)"
    )]
    ConfigChanged,
    #[error("checkpoint was written by {0}, this is {WRITER}")]
    OtherWriter(String),
    #[error("checkpoint content is inconsistent: {0}")]
    Malformed(&'static str),
}

/// Index into the meta's table of snapshot references.
type RefIdx = u32;

/// A key's transfer records for one sending state: (receiver, declaring snapshot).
type TransferRecords = (KeyId, StateIdx, Vec<(StateCode, RefIdx)>);

#[derive(Serialize, Deserialize)]
struct Meta {
    /// The version of the program that wrote it: rules may change between
    /// versions without a format change, so another version rebuilds.
    written_by: String,
    transfer_grace_ms: i64,
    cadence_ms: Vec<(StateCode, i64)>,
    /// The caller's own data, kept alongside (the coordinator's bookkeeping).
    extra: serde_json::Value,
    refs: Vec<SnapshotRef>,
    states: Vec<StateMeta>,
    vanished: Vec<(KeyId, StateIdx, RefIdx, RefIdx)>,
    transfers: Vec<TransferRecords>,
    disposals: Vec<(KeyId, Vec<(RefIdx, Cell)>)>,
    last_mention: Vec<(KeyId, StateIdx, RefIdx, Cell, RefIdx)>,
    last_held: Vec<(KeyId, StateIdx, RefIdx, RefIdx)>,
    seizures: Vec<(KeyId, Vec<Seizure>)>,
    equivocations: Vec<(StateCode, u64, SnapshotDigest, SnapshotDigest)>,
    deadlines: Vec<(i64, KeyId)>,
    open: Vec<(AlertKey, AlertBody)>,
    /// Per key, its open alerts as indices into `open`, in the engine's
    /// order (which decides the order of the changes it reports).
    open_by_key: Vec<(KeyId, Vec<u32>)>,
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    code: StateCode,
    latest: Option<RefIdx>,
    declared: Vec<(KeyId, Vec<StateCode>)>,
}

/// Interns snapshot references while the meta is built.
#[derive(Default)]
struct RefTable {
    refs: Vec<SnapshotRef>,
    index: HashMap<SnapshotRef, RefIdx>,
}

impl RefTable {
    fn idx(&mut self, r: SnapshotRef) -> RefIdx {
        *self.index.entry(r).or_insert_with(|| {
            self.refs.push(r);
            (self.refs.len() - 1) as RefIdx
        })
    }
}

/// Map entries in a fixed order, so that equal engines write equal files.
fn sorted<K: Ord + Copy, V, T>(map: &HashMap<K, V>, f: impl FnMut((&K, &V)) -> T) -> Vec<T> {
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| **k);
    entries.into_iter().map(f).collect()
}

struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sha.update(bytes);
        self.inner.write_all(bytes)
    }

    fn blob(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.put(&(bytes.len() as u64).to_le_bytes())?;
        self.put(bytes)
    }
}

struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn exact<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf)?;
        self.sha.update(buf);
        Ok(buf)
    }

    /// A blob. The buffer grows only as bytes arrive, so a damaged length
    /// ends in an error at the end of the file, not in a huge allocation.
    fn blob(&mut self) -> io::Result<Vec<u8>> {
        let len = u64::from_le_bytes(self.exact()?);
        let mut bytes = Vec::new();
        (&mut self.inner).take(len).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.sha.update(&bytes);
        Ok(bytes)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varints(bytes: &[u8]) -> Result<Vec<u32>, CheckpointError> {
    let mut out = Vec::new();
    let mut v: u64 = 0;
    let mut shift = 0;
    for &b in bytes {
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            out.push(u32::try_from(v).map_err(|_| CheckpointError::Malformed("key length"))?);
            v = 0;
            shift = 0;
        } else {
            shift += 7;
            if shift > 28 {
                return Err(CheckpointError::Malformed("key length"));
            }
        }
    }
    if shift != 0 {
        return Err(CheckpointError::Malformed("key length"));
    }
    Ok(out)
}

impl Engine {
    /// Writes the engine's whole state, with `extra` (the caller's own data,
    /// returned by [`Engine::read_checkpoint`]). Buffer `out`: the file is
    /// written in many small pieces.
    pub fn write_checkpoint(&self, extra: serde_json::Value, out: impl Write) -> io::Result<()> {
        let mut refs = RefTable::default();
        let position: HashMap<&AlertKey, u32> = self.open.keys().zip(0u32..).collect();
        let states = self
            .states
            .iter()
            .map(|slot| StateMeta {
                code: slot.code,
                latest: slot.latest.map(|r| refs.idx(r)),
                declared: sorted(&slot.declared, |(id, to)| (*id, to.clone())),
            })
            .collect();
        let meta = Meta {
            written_by: WRITER.to_string(),
            transfer_grace_ms: self.config.transfer_grace_ms,
            cadence_ms: self
                .config
                .cadence_ms
                .iter()
                .map(|(s, c)| (*s, *c))
                .collect(),
            extra,
            states,
            vanished: sorted(&self.vanished, |(&(id, s), v)| {
                (id, s, refs.idx(v.last_held), refs.idx(v.absent_in))
            }),
            transfers: sorted(&self.transfers, |(&(id, s), list)| {
                let list = list.iter().map(|t| (t.to, refs.idx(t.declared_in)));
                (id, s, list.collect())
            }),
            disposals: sorted(&self.disposals, |(&id, list)| {
                (id, list.iter().map(|(r, c)| (refs.idx(*r), *c)).collect())
            }),
            last_mention: sorted(&self.last_mention, |(&(id, s), m)| {
                (id, s, refs.idx(m.listed_in), m.cell, refs.idx(m.absent_in))
            }),
            last_held: sorted(&self.last_held, |(&(id, s), h)| {
                (id, s, refs.idx(h.held_in), refs.idx(h.gone_in))
            }),
            seizures: sorted(&self.seizures, |(&id, list)| (id, list.clone())),
            equivocations: self
                .equivocations
                .values()
                .map(|e| (e.state, e.sequence, e.submitted, e.conflicts_with))
                .collect(),
            deadlines: self.deadlines.iter().copied().collect(),
            open: self
                .open
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
            // Every listed alert is open (`set_alert` keeps the two together).
            open_by_key: sorted(&self.open_by_key, |(&id, list)| {
                (
                    id,
                    list.iter()
                        .map(|k| position.get(k).copied().unwrap_or(u32::MAX))
                        .collect(),
                )
            }),
            refs: refs.refs,
        };

        let mut w = HashingWriter {
            inner: out,
            sha: Sha256::new(),
        };
        w.put(MAGIC)?;
        w.put(&FORMAT_VERSION.to_le_bytes())?;
        w.blob(&serde_json::to_vec(&meta).map_err(io::Error::other)?)?;
        let (arena, lengths) = self.keys.raw_parts();
        let mut encoded = Vec::with_capacity(self.keys.len() * 2);
        for (model, serial) in lengths {
            put_varint(&mut encoded, model);
            put_varint(&mut encoded, serial);
        }
        w.blob(&encoded)?;
        w.blob(arena)?;
        for slot in &self.states {
            let ids: Vec<u8> = slot.keys.iter().flat_map(|id| id.to_le_bytes()).collect();
            w.blob(&ids)?;
            let cells: Vec<u8> = slot.keys.iter().map(|&id| slot.cell(id)).collect();
            w.blob(&cells)?;
        }
        let mut hints = self.hints.clone();
        hints.resize(self.keys.len(), 0);
        w.blob(&hints)?;
        let sum = w.sha.finalize();
        w.inner.write_all(&sum)?;
        w.inner.flush()
    }

    /// Reads an engine back from [`Engine::write_checkpoint`]'s output, with
    /// the caller's data. Refuses a checkpoint written under another
    /// `config`. Every index in the file is checked, so a damaged file gives
    /// an error, never a panic or an engine that points nowhere.
    pub fn read_checkpoint(
        config: &EngineConfig,
        input: impl Read,
    ) -> Result<(Engine, serde_json::Value), CheckpointError> {
        let mut r = HashingReader {
            inner: input,
            sha: Sha256::new(),
        };
        if &r.exact::<8>()? != MAGIC {
            return Err(CheckpointError::NotACheckpoint);
        }
        let found = u32::from_le_bytes(r.exact()?);
        if found != FORMAT_VERSION {
            return Err(CheckpointError::Version { found });
        }
        let meta = r.blob()?;
        let lengths = r.blob()?;
        let arena = r.blob()?;
        // The meta says how many state sections follow; a damaged meta is
        // caught by the checksum below, so parse it now but trust it only
        // after the sum matches.
        let meta: Meta =
            serde_json::from_slice(&meta).map_err(|_| CheckpointError::Malformed("meta"))?;
        let mut state_arrays =
            Vec::with_capacity(meta.states.len().min(crate::reconcile::MAX_STATES));
        for _ in &meta.states {
            let ids = r.blob()?;
            let cells = r.blob()?;
            state_arrays.push((ids, cells));
        }
        let hints = r.blob()?;
        let expected = r.sha.finalize();
        let mut sum = [0u8; 32];
        r.inner.read_exact(&mut sum)?;
        if sum[..] != expected[..] {
            return Err(CheckpointError::Checksum);
        }

        if meta.written_by != WRITER {
            return Err(CheckpointError::OtherWriter(meta.written_by));
        }
        let cadence: BTreeMap<StateCode, i64> = meta.cadence_ms.iter().copied().collect();
        if meta.transfer_grace_ms != config.transfer_grace_ms || cadence != config.cadence_ms {
            return Err(CheckpointError::ConfigChanged);
        }
        let lengths = varints(&lengths)?;
        if lengths.len() % 2 != 0 || lengths.len() / 2 > KeyId::MAX as usize {
            return Err(CheckpointError::Malformed("key lengths"));
        }
        let keys = KeyTable::from_raw_parts(
            arena,
            lengths.chunks_exact(2).map(|pair| (pair[0], pair[1])),
        )
        .ok_or(CheckpointError::Malformed("keys"))?;
        let key_count = keys.len();
        let key = |id: KeyId| -> Result<KeyId, CheckpointError> {
            if (id as usize) < key_count {
                Ok(id)
            } else {
                Err(CheckpointError::Malformed("key id out of range"))
            }
        };
        let refs = &meta.refs;
        let snapshot = |i: RefIdx| -> Result<SnapshotRef, CheckpointError> {
            refs.get(i as usize)
                .copied()
                .ok_or(CheckpointError::Malformed(
                    "snapshot reference out of range",
                ))
        };
        let state_count = meta.states.len();
        if state_count > crate::reconcile::MAX_STATES {
            return Err(CheckpointError::Malformed("too many states"));
        }
        let state = |s: StateIdx| -> Result<StateIdx, CheckpointError> {
            if (s as usize) < state_count {
                Ok(s)
            } else {
                Err(CheckpointError::Malformed("state index out of range"))
            }
        };

        let mut engine = Engine::new(config.clone());
        for (m, (ids, cells)) in meta.states.iter().zip(state_arrays) {
            if ids.len() != cells.len() * 4 {
                return Err(CheckpointError::Malformed("state arrays"));
            }
            let mut slot = StateSlot {
                code: m.code,
                latest: m.latest.map(snapshot).transpose()?,
                keys: Vec::with_capacity(cells.len()),
                cells: Vec::new(),
                declared: HashMap::with_capacity(m.declared.len()),
            };
            for (id, &cell) in ids.chunks_exact(4).zip(&cells) {
                let id = key(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))?;
                if cell == 0 || slot.cell(id) != 0 {
                    return Err(CheckpointError::Malformed("state cells"));
                }
                slot.set_cell(id, cell);
                slot.keys.push(id);
            }
            for (id, to) in &m.declared {
                slot.declared.insert(key(*id)?, to.clone());
            }
            if engine
                .state_index
                .insert(m.code, engine.states.len() as StateIdx)
                .is_some()
            {
                return Err(CheckpointError::Malformed("a state appears twice"));
            }
            engine.states.push(slot);
        }
        engine.keys = keys;
        for &(id, s, held, absent) in &meta.vanished {
            let v = Vanished {
                last_held: snapshot(held)?,
                absent_in: snapshot(absent)?,
            };
            engine.vanished.insert((key(id)?, state(s)?), v);
        }
        for (id, s, list) in &meta.transfers {
            let list = list
                .iter()
                .map(|&(to, r)| {
                    Ok(Transfer {
                        to,
                        declared_in: snapshot(r)?,
                    })
                })
                .collect::<Result<_, CheckpointError>>()?;
            engine.transfers.insert((key(*id)?, state(*s)?), list);
        }
        for (id, list) in &meta.disposals {
            let list = list
                .iter()
                .map(|&(r, c)| Ok((snapshot(r)?, c)))
                .collect::<Result<_, CheckpointError>>()?;
            engine.disposals.insert(key(*id)?, list);
        }
        for &(id, s, listed, cell, absent) in &meta.last_mention {
            let m = LastMention {
                listed_in: snapshot(listed)?,
                cell,
                absent_in: snapshot(absent)?,
            };
            engine.last_mention.insert((key(id)?, state(s)?), m);
        }
        for &(id, s, held, gone) in &meta.last_held {
            let h = LastHeld {
                held_in: snapshot(held)?,
                gone_in: snapshot(gone)?,
            };
            engine.last_held.insert((key(id)?, state(s)?), h);
        }
        for (id, list) in meta.seizures {
            engine.seizures.insert(key(id)?, list);
        }
        for (state, sequence, submitted, conflicts_with) in meta.equivocations {
            engine.equivocations.insert(
                (state, sequence),
                EquivocationRef {
                    state,
                    sequence,
                    submitted,
                    conflicts_with,
                },
            );
        }
        for &(deadline, id) in &meta.deadlines {
            engine.deadlines.insert((deadline, key(id)?));
        }
        for (id, positions) in &meta.open_by_key {
            let list = positions
                .iter()
                .map(|&i| {
                    meta.open
                        .get(i as usize)
                        .map(|(alert, _)| alert.clone())
                        .ok_or(CheckpointError::Malformed("open alert index out of range"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            engine.open_by_key.insert(key(*id)?, list);
        }
        engine.open = meta.open.into_iter().collect();
        if hints.len() != key_count {
            return Err(CheckpointError::Malformed("hints"));
        }
        engine.hints = hints;
        Ok((engine, meta.extra))
    }
}
