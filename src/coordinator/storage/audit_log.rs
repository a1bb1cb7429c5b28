//! The audit trail's storage: sled tree `audit`, sequence (big-endian u64) →
//! hash (32 bytes) || signature (64 bytes) || record encoding (see
//! `crate::audit`). Appends are serialised and flushed before they return,
//! so the chain never forks and an answered RPC's record is on disk.

use std::sync::Mutex;

use ed25519_dalek::SigningKey;

use crate::audit::{Event, GENESIS_HASH, SealedRecord};

/// Why the audit trail could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("audit trail storage failed: {0}")]
    Backend(#[source] crate::coordinator::storage::BackendError),
    #[error(
        "the last audit record ({0}) has no 32-byte hash to chain the next one to: \
         the trail was damaged; run `tally audit verify` against a copy to see where"
    )]
    DamagedHead(u64),
    #[error("the audit trail to restore into is not empty")]
    NotEmpty,
    #[error("audit trail stored under a key that is not a sequence number")]
    BadKey,
    #[error("the audit task failed: {0}")]
    Task(String),
}

impl From<sled::Error> for AuditLogError {
    fn from(e: sled::Error) -> Self {
        AuditLogError::Backend(Box::new(e))
    }
}

/// Every record of the trail in `db`, as stored (unchecked), oldest first:
/// for reading a store without running a coordinator (export).
pub fn read_all(db: &sled::Db) -> Result<Vec<SealedRecord>, AuditLogError> {
    db.open_tree(TREE)?
        .iter()
        .map(|kv| {
            let (k, v) = kv?;
            Ok(SealedRecord::from_bytes(sequence_of(&k)?, &v))
        })
        .collect()
}

/// Writes `records` (a whole trail, verified by the caller) into the empty
/// trail of a new store, exactly as they were: their hashes and the
/// signatures of the coordinator that sealed them stay valid.
pub fn restore(db: &sled::Db, records: &[SealedRecord]) -> Result<(), AuditLogError> {
    let tree = db.open_tree(TREE)?;
    if !tree.is_empty() {
        return Err(AuditLogError::NotEmpty);
    }
    for r in records {
        tree.insert(r.sequence.to_be_bytes(), r.to_bytes())?;
    }
    crate::coordinator::storage::flush(db)?;
    Ok(())
}

/// The sled tree holding the trail.
const TREE: &str = "audit";

/// Where the next record goes.
struct Head {
    next_sequence: u64,
    hash: [u8; 32],
}

/// The coordinator's audit trail.
pub struct AuditLog {
    db: sled::Db,
    tree: sled::Tree,
    key: SigningKey,
    /// Held from sealing a record until it is flushed.
    head: Mutex<Head>,
}

fn sequence_of(key: &[u8]) -> Result<u64, AuditLogError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| AuditLogError::BadKey)?,
    ))
}

impl AuditLog {
    /// Opens the trail in `db`; records are signed with `key`.
    pub fn open(db: &sled::Db, key: SigningKey) -> Result<AuditLog, AuditLogError> {
        let tree = db.open_tree(TREE)?;
        let head = match tree.last()? {
            None => Head {
                next_sequence: 1,
                hash: GENESIS_HASH,
            },
            Some((k, v)) => {
                let last = SealedRecord::from_bytes(sequence_of(&k)?, &v);
                Head {
                    next_sequence: last.sequence + 1,
                    hash: last
                        .hash_array()
                        .ok_or(AuditLogError::DamagedHead(last.sequence))?,
                }
            }
        };
        Ok(AuditLog {
            db: db.clone(),
            tree,
            key,
            head: Mutex::new(head),
        })
    }

    /// Appends `event` as the next record and flushes it to disk.
    pub fn append(&self, event: Event) -> Result<SealedRecord, AuditLogError> {
        // A panic elsewhere while holding the lock leaves the head as it was
        // (it is updated only after a successful insert), so it stays usable.
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let record = SealedRecord::seal(head.next_sequence, event, &head.hash, &self.key);
        self.tree
            .insert(record.sequence.to_be_bytes(), record.to_bytes())?;
        // Once inserted, the record is readable (ListAuditRecords does not
        // take the lock) and may reach disk with a later flush: the head moves
        // past it even if this flush fails, or the next record would be sealed
        // under the same sequence and replace one a reader may have copied.
        head.next_sequence = record.sequence + 1;
        head.hash = record.hash_array().unwrap_or(GENESIS_HASH);
        crate::coordinator::storage::flush(&self.db)?;
        Ok(record)
    }

    /// Up to `limit` records from `from_sequence` on, as stored (unchecked).
    pub fn list(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<SealedRecord>, AuditLogError> {
        self.tree
            .range(from_sequence.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok(SealedRecord::from_bytes(sequence_of(&k)?, &v))
            })
            .collect()
    }

    /// The sequence of the last record (0: none).
    pub fn last_sequence(&self) -> u64 {
        self.head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_sequence
            - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Actor, Outcome, verify};

    fn event(i: u64) -> Event {
        Event {
            at_unix_ms: i as i64,
            actor: Actor::Anonymous,
            peer: None,
            action: Action::AcknowledgeAlert { alert_id: i },
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn concurrent_appends_form_one_chain_that_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        {
            let db = sled::open(dir.path()).unwrap();
            let log = std::sync::Arc::new(AuditLog::open(&db, key.clone()).unwrap());
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let log = log.clone();
                    std::thread::spawn(move || {
                        for i in 0..10 {
                            log.append(event(t * 100 + i)).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(log.last_sequence(), 40);
        }
        let db = sled::open(dir.path()).unwrap();
        let log = AuditLog::open(&db, key.clone()).unwrap();
        log.append(event(999)).unwrap();
        let all = log.list(1, usize::MAX).unwrap();
        let v = verify(&all, &key.verifying_key()).unwrap();
        assert_eq!(v.records, 41);
        assert_eq!(log.list(40, 10).unwrap().len(), 2);
        assert_eq!(log.list(40, 1).unwrap()[0].sequence, 40);
    }
}
