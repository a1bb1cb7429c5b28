//! The audit trail in sled: tree `audit`, sequence (big-endian u64) →
//! hash (32 bytes) || signature (64 bytes) || record encoding (see
//! `crate::audit`).

use std::sync::Mutex;

use ed25519_dalek::SigningKey;

use super::audit_log::{AuditLogError, AuditStore, Head};
use crate::audit::{Event, SealedRecord};

impl From<sled::Error> for AuditLogError {
    fn from(e: sled::Error) -> Self {
        AuditLogError::Backend(Box::new(e))
    }
}

/// Every record of the trail in `db`, as stored (unchecked), oldest first:
/// for reading a store without running a coordinator (export).
pub(crate) fn read_all(db: &sled::Db) -> Result<Vec<SealedRecord>, AuditLogError> {
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
    super::flush(db)?;
    Ok(())
}

/// The sled tree holding the trail.
const TREE: &str = "audit";

/// The coordinator's audit trail in sled.
pub struct SledAuditLog {
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

impl SledAuditLog {
    /// Opens the trail in `db`; records are signed with `key`.
    pub fn open(db: &sled::Db, key: SigningKey) -> Result<SledAuditLog, AuditLogError> {
        let tree = db.open_tree(TREE)?;
        let last = match tree.last()? {
            None => None,
            Some((k, v)) => Some(SealedRecord::from_bytes(sequence_of(&k)?, &v)),
        };
        let head = Head::after(last.as_ref())?;
        Ok(SledAuditLog {
            db: db.clone(),
            tree,
            key,
            head: Mutex::new(head),
        })
    }
}

impl AuditStore for SledAuditLog {
    fn append(&self, event: Event) -> Result<SealedRecord, AuditLogError> {
        // A panic elsewhere while holding the lock leaves the head as it was
        // (it is updated only after a successful insert), so it stays usable.
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let record = head.seal(event, &self.key);
        self.tree
            .insert(record.sequence.to_be_bytes(), record.to_bytes())?;
        // Once inserted, the record is readable (ListAuditRecords does not
        // take the lock) and may reach disk with a later flush: the head moves
        // past it even if this flush fails, or the next record would be sealed
        // under the same sequence and replace one a reader may have copied.
        head.advance(&record);
        super::flush(&self.db)?;
        Ok(record)
    }

    fn list(&self, from_sequence: u64, limit: usize) -> Result<Vec<SealedRecord>, AuditLogError> {
        self.tree
            .range(from_sequence.to_be_bytes()..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok(SealedRecord::from_bytes(sequence_of(&k)?, &v))
            })
            .collect()
    }

    fn last_sequence(&self) -> u64 {
        self.head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_sequence()
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

    /// The chain goes on from its last record after a reopen (concurrent
    /// appends forming one chain are in the conformance suite).
    #[test]
    fn the_chain_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        {
            let db = sled::open(dir.path()).unwrap();
            let log = SledAuditLog::open(&db, key.clone()).unwrap();
            for i in 0..40 {
                log.append(event(i)).unwrap();
            }
        }
        let db = sled::open(dir.path()).unwrap();
        let log = SledAuditLog::open(&db, key.clone()).unwrap();
        assert_eq!(log.last_sequence(), 40);
        log.append(event(999)).unwrap();
        let all = log.list(1, usize::MAX).unwrap();
        let v = verify(&all, &key.verifying_key()).unwrap();
        assert_eq!(v.records, 41);
        assert_eq!(log.list(40, 10).unwrap().len(), 2);
    }
}
