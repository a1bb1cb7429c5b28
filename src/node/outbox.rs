//! The node's outbox: every snapshot the node signed, kept until (and after)
//! the coordinator accepts it.
//!
//! The outbox is what makes the node crash-safe. A snapshot is written here,
//! and flushed, before anything is sent; a node that dies after signing finds
//! the same signed snapshot on its next run and resubmits it, so it never signs
//! a second snapshot for one sequence number that the coordinator may hold.
//! (Only a snapshot the coordinator refused for its content or its signer,
//! and those chained on it, leave the outbox unaccepted: see
//! [`Outbox::discard_refused`].) Each record also keeps the SHA-256 of the
//! export file it came from, so that an export submitted again (after a
//! crash, or by a cron job) is not signed twice: see [`Outbox::find_export`]
//! and [`OutboxEntry::covers`].

use std::path::Path;

use ed25519_dalek::Signature;

use crate::snapshot::{HEADER_LEN, Receipt, SignedHeader, SnapshotDigest, SnapshotHeader};

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "the outbox {dir} is in use by another tally process (a running `tally node watch` or \
         `tally node submit`; one process at a time): wait for it, or stop it first"
    )]
    InUse { dir: std::path::PathBuf },
    #[error("outbox storage failed: {0}")]
    Backend(#[from] sled::Error),
    #[error("outbox record for sequence {0} is corrupt")]
    Corrupt(u64),
    #[error(
        "chunk {index} of sequence {sequence} is missing from the outbox (damaged outbox \
         storage): the snapshot cannot be sent as signed"
    )]
    MissingChunk { sequence: u64, index: u32 },
}

/// One signed snapshot in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub signed: SignedHeader,
    pub export_sha256: [u8; 32],
    pub chunk_count: u32,
    /// The coordinator's receipt, once it accepted the snapshot.
    pub receipt: Option<Receipt>,
}

impl OutboxEntry {
    pub fn sequence(&self) -> u64 {
        self.signed.header.sequence
    }

    pub fn digest(&self) -> SnapshotDigest {
        self.signed.digest()
    }

    /// Returns true if and only if this snapshot was signed from an export
    /// with these bytes (SHA-256 `export_sha256`) as of `as_of_unix_ms` or
    /// later: signing that export again as of `as_of_unix_ms` would only
    /// repeat this snapshot (the same export retried), or attest the same
    /// items as of an earlier time than this snapshot already does (a stale
    /// export). The same bytes as of a later time are a new export: they
    /// attest that the inventory is still the same.
    pub(crate) fn covers(&self, export_sha256: &[u8; 32], as_of_unix_ms: i64) -> bool {
        &self.export_sha256 == export_sha256 && self.signed.header.as_of_unix_ms >= as_of_unix_ms
    }
}

/// Sled trees: `snapshots` (sequence → record) and `chunks` (sequence ‖ index → leaves).
pub struct Outbox {
    db: sled::Db,
    snapshots: sled::Tree,
    chunks: sled::Tree,
}

const VERSION: u8 = 1;

fn chunk_key(sequence: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&sequence.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Layout: version, header encoding, signature, export hash, chunk count, then
/// either 0 (pending) or 1 followed by accepted_at and the receipt signature.
fn encode(e: &OutboxEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + HEADER_LEN + 64 + 32 + 4 + 1 + 8 + 64);
    out.push(VERSION);
    out.extend_from_slice(&e.signed.header.encode());
    out.extend_from_slice(&e.signed.signature.to_bytes());
    out.extend_from_slice(&e.export_sha256);
    out.extend_from_slice(&e.chunk_count.to_be_bytes());
    match &e.receipt {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&r.accepted_at_unix_ms.to_be_bytes());
            out.extend_from_slice(&r.signature.to_bytes());
        }
    }
    out
}

fn decode(b: &[u8]) -> Option<OutboxEntry> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = b.get(at..at + n);
        at += n;
        s
    };
    if take(1)? != [VERSION] {
        return None;
    }
    let header = SnapshotHeader::decode(take(HEADER_LEN)?)?;
    let signature = Signature::from_slice(take(64)?).ok()?;
    let export_sha256: [u8; 32] = take(32)?.try_into().ok()?;
    let chunk_count = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let receipt = match take(1)? {
        [0] => None,
        [1] => {
            let accepted_at_unix_ms = i64::from_be_bytes(take(8)?.try_into().ok()?);
            Some(Receipt {
                state: header.state,
                sequence: header.sequence,
                digest: header.digest(),
                accepted_at_unix_ms,
                signature: Signature::from_slice(take(64)?).ok()?,
            })
        }
        _ => return None,
    };
    Some(OutboxEntry {
        signed: SignedHeader { header, signature },
        export_sha256,
        chunk_count,
        receipt,
    })
}

impl Outbox {
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            if crate::coordinator::storage::is_locked_by_another_process(&e) {
                OutboxError::InUse {
                    dir: dir.to_path_buf(),
                }
            } else {
                OutboxError::Backend(e)
            }
        })?;
        Ok(Outbox {
            snapshots: db.open_tree("snapshots")?,
            chunks: db.open_tree("chunks")?,
            db,
        })
    }

    fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<OutboxEntry, OutboxError> {
        let seq = key.try_into().map(u64::from_be_bytes).unwrap_or_default();
        decode(value).ok_or(OutboxError::Corrupt(seq))
    }

    /// The newest signed snapshot, accepted or not.
    pub fn last(&self) -> Result<Option<OutboxEntry>, OutboxError> {
        match self.snapshots.last()? {
            Some((k, v)) => self.decode_entry(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.snapshots
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                self.decode_entry(&k, &v)
            })
            .collect()
    }

    /// Entries not yet accepted, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, OutboxError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.receipt.is_none())
            .collect())
    }

    /// The newest entry that [covers](OutboxEntry::covers) an export with
    /// this SHA-256 as of `as_of_unix_ms`, pending or accepted, if any: that
    /// export was signed already, and is not signed again. Every entry
    /// counts, not only the newest: an export file signed as sequence 3 and
    /// submitted again after sequence 4 is still the export of sequence 3 (a
    /// stale retry), while an inventory that went back to what sequence 3
    /// said comes in a new export, with a later as-of time.
    pub(crate) fn find_export(
        &self,
        sha256: &[u8; 32],
        as_of_unix_ms: i64,
    ) -> Result<Option<OutboxEntry>, OutboxError> {
        for kv in self.snapshots.iter().rev() {
            let (k, v) = kv?;
            let entry = self.decode_entry(&k, &v)?;
            if entry.covers(sha256, as_of_unix_ms) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// The entry with this sequence, if the outbox holds it.
    pub fn entry(&self, sequence: u64) -> Result<Option<OutboxEntry>, OutboxError> {
        match self.snapshots.get(sequence.to_be_bytes())? {
            Some(v) => Ok(Some(self.decode_entry(&sequence.to_be_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Stores a freshly signed snapshot durably: chunks, a flush, then the
    /// record that makes it visible, and another flush.
    pub(crate) fn store_signed(
        &self,
        signed: &SignedHeader,
        chunks: &[Vec<u8>],
        export_sha256: [u8; 32],
    ) -> Result<OutboxEntry, OutboxError> {
        let seq = signed.header.sequence;
        for (i, chunk) in chunks.iter().enumerate() {
            self.chunks
                .insert(chunk_key(seq, i as u32), chunk.as_slice())?;
        }
        crate::coordinator::storage::flush(&self.db)?;
        let entry = OutboxEntry {
            signed: signed.clone(),
            export_sha256,
            chunk_count: chunks.len() as u32,
            receipt: None,
        };
        self.snapshots.insert(seq.to_be_bytes(), encode(&entry))?;
        crate::coordinator::storage::flush(&self.db)?;
        Ok(entry)
    }

    /// Records the coordinator's receipt for an entry (flushed).
    pub(crate) fn mark_accepted(
        &self,
        entry: &OutboxEntry,
        receipt: &Receipt,
    ) -> Result<(), OutboxError> {
        let mut updated = entry.clone();
        updated.receipt = Some(receipt.clone());
        self.snapshots
            .insert(entry.sequence().to_be_bytes(), encode(&updated))?;
        crate::coordinator::storage::flush(&self.db)?;
        Ok(())
    }

    /// Removes the entry for `sequence` after the coordinator refused it for
    /// good (its content, not the network), together with every later entry:
    /// those chain on it, so the coordinator could never accept them. The
    /// coordinator stored nothing for a refused snapshot (nor, then, for the
    /// later ones), so signing other snapshots for these numbers is not an
    /// equivocation. Returns the sequences removed, oldest first: none unless
    /// the entry for `sequence` exists and is still pending.
    pub fn discard_refused(&self, sequence: u64) -> Result<Vec<u64>, OutboxError> {
        let doomed: Vec<OutboxEntry> = self
            .snapshots
            .range(sequence.to_be_bytes()..)
            .map(|kv| {
                let (k, v) = kv?;
                self.decode_entry(&k, &v)
            })
            .collect::<Result<_, _>>()?;
        match doomed.first() {
            Some(first) if first.sequence() == sequence && first.receipt.is_none() => {}
            _ => return Ok(Vec::new()),
        }
        // One batch, so that a crash leaves either the whole chain or the
        // prefix before `sequence`, never a gap; chunks go once no record
        // points at them.
        let mut records = sled::Batch::default();
        let mut chunks = sled::Batch::default();
        for entry in &doomed {
            records.remove(&entry.sequence().to_be_bytes());
            for i in 0..entry.chunk_count {
                chunks.remove(&chunk_key(entry.sequence(), i));
            }
        }
        self.snapshots.apply_batch(records)?;
        crate::coordinator::storage::flush(&self.db)?;
        self.chunks.apply_batch(chunks)?;
        crate::coordinator::storage::flush(&self.db)?;
        Ok(doomed.iter().map(OutboxEntry::sequence).collect())
    }

    /// Reads chunk `index` of the entry with `sequence`.
    pub fn chunk(&self, sequence: u64, index: u32) -> Result<Vec<u8>, OutboxError> {
        self.chunk_reader().chunk(sequence, index)
    }

    /// A handle that reads chunks from another thread while the outbox is in use.
    pub(crate) fn chunk_reader(&self) -> ChunkReader {
        ChunkReader(self.chunks.clone())
    }
}

/// Reads outbox chunks; cheap to clone and `Send`.
#[derive(Clone)]
pub(crate) struct ChunkReader(sled::Tree);

impl ChunkReader {
    pub fn chunk(&self, sequence: u64, index: u32) -> Result<Vec<u8>, OutboxError> {
        self.0
            .get(chunk_key(sequence, index))?
            .map(|v| v.to_vec())
            .ok_or(OutboxError::MissingChunk { sequence, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateCode;

    #[test]
    fn an_outbox_open_elsewhere_is_named_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Outbox::open(dir.path()).unwrap();
        let Err(err) = Outbox::open(dir.path()) else {
            panic!("sled allows one holder of a database");
        };
        assert!(matches!(err, OutboxError::InUse { .. }), "{err:?}");
        assert!(err.to_string().contains("tally node watch"), "{err}");
    }

    const AS_OF: i64 = 1_700_000_000_000;

    fn signed(seq: u64) -> SignedHeader {
        signed_as_of(seq, AS_OF)
    }

    fn signed_as_of(seq: u64, as_of_unix_ms: i64) -> SignedHeader {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        SnapshotHeader {
            state: StateCode::parse("ARM").unwrap(),
            sequence: seq,
            as_of_unix_ms,
            previous_digest: SnapshotDigest::GENESIS,
            item_count: 0,
            items_root: crate::merkle::empty_root(),
        }
        .sign(&key)
    }

    #[test]
    fn entries_survive_reopen_and_acceptance_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            let e = outbox
                .store_signed(&signed(1), &[b"abc".to_vec()], [1; 32])
                .unwrap();
            outbox.store_signed(&signed(2), &[], [2; 32]).unwrap();
            let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
            let receipt = Receipt::issue(&key, e.signed.header.state, 1, e.digest(), 5);
            outbox.mark_accepted(&e, &receipt).unwrap();
        }
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.last().unwrap().unwrap().sequence(), 2);
        assert_eq!(outbox.pending().unwrap().len(), 1);
        assert_eq!(
            outbox
                .entry(1)
                .unwrap()
                .unwrap()
                .receipt
                .unwrap()
                .accepted_at_unix_ms,
            5
        );
        assert_eq!(outbox.chunk(1, 0).unwrap(), b"abc");
    }

    /// An export is signed already while some entry, pending or accepted,
    /// newest or not, holds its bytes as of its as-of time or later; the
    /// same bytes as of a later time are a new export.
    #[test]
    fn an_export_is_found_while_an_entry_covers_its_bytes_and_as_of_time() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let day = 86_400_000;
        let first = outbox.store_signed(&signed(1), &[], [1; 32]).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let receipt = Receipt::issue(&key, first.signed.header.state, 1, first.digest(), 5);
        outbox.mark_accepted(&first, &receipt).unwrap();
        outbox
            .store_signed(&signed_as_of(2, AS_OF + day), &[], [2; 32])
            .unwrap();
        // The inventory went back to sequence 1's, in a new export.
        outbox
            .store_signed(&signed_as_of(3, AS_OF + 2 * day), &[], [1; 32])
            .unwrap();
        let found = |sha: u8, as_of: i64| {
            outbox
                .find_export(&[sha; 32], as_of)
                .unwrap()
                .map(|e| e.sequence())
        };
        for (sha, as_of, expected, why) in [
            (1, AS_OF, Some(3), "the newest entry that covers it"),
            (1, AS_OF + 2 * day, Some(3), "the same export retried"),
            (1, AS_OF + 2 * day + 1, None, "the same bytes, later: new"),
            (2, AS_OF + day, Some(2), "pending, retried"),
            (2, AS_OF, Some(2), "stale: as of before its snapshot"),
            (2, AS_OF + day + 1, None, "the same bytes, later: new"),
            (3, AS_OF, None, "other bytes"),
        ] {
            assert_eq!(found(sha, as_of), expected, "{why}");
        }
    }

    #[test]
    fn a_refused_entry_goes_with_every_later_one_and_never_an_accepted_one() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let first = outbox
            .store_signed(&signed(1), &[b"one".to_vec()], [1; 32])
            .unwrap();
        outbox
            .store_signed(&signed(2), &[b"two".to_vec()], [2; 32])
            .unwrap();
        outbox
            .store_signed(&signed(3), &[b"three".to_vec()], [3; 32])
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let receipt = Receipt::issue(&key, first.signed.header.state, 1, first.digest(), 5);
        outbox.mark_accepted(&first, &receipt).unwrap();

        assert!(outbox.discard_refused(1).unwrap().is_empty(), "accepted");
        assert!(outbox.discard_refused(4).unwrap().is_empty(), "absent");
        assert_eq!(outbox.discard_refused(2).unwrap(), vec![2, 3]);
        let left: Vec<u64> = outbox
            .entries()
            .unwrap()
            .iter()
            .map(OutboxEntry::sequence)
            .collect();
        assert_eq!(left, vec![1]);
        assert_eq!(outbox.chunk(1, 0).unwrap(), b"one");
        assert!(matches!(
            outbox.chunk(2, 0),
            Err(OutboxError::MissingChunk {
                sequence: 2,
                index: 0
            })
        ));
        assert!(matches!(
            outbox.chunk(3, 0),
            Err(OutboxError::MissingChunk {
                sequence: 3,
                index: 0
            })
        ));
    }
}
