//! The audit trail in sled: tree `audit`, sequence (big-endian u64) →
//! hash (32 bytes) || signature (64 bytes) || record encoding (see
//! `crate::audit`).

use super::audit_log::{AuditLogError, AuditTrail};
use crate::audit::SealedRecord;

impl From<sled::Error> for AuditLogError {
    fn from(e: sled::Error) -> Self {
        AuditLogError::Backend(Box::new(e))
    }
}

/// The sled tree holding the trail.
const TREE: &str = "audit";

/// The audit trail's tree of one sled database.
pub struct SledAuditTrail {
    db: sled::Db,
    tree: sled::Tree,
}

fn sequence_of(key: &[u8]) -> Result<u64, AuditLogError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| AuditLogError::BadKey)?,
    ))
}

impl SledAuditTrail {
    /// Opens the trail in `db`.
    pub fn open(db: &sled::Db) -> Result<SledAuditTrail, AuditLogError> {
        Ok(SledAuditTrail {
            db: db.clone(),
            tree: db.open_tree(TREE)?,
        })
    }
}

impl AuditTrail for SledAuditTrail {
    fn put(&self, record: &SealedRecord) -> Result<(), AuditLogError> {
        self.tree
            .insert(record.sequence.to_be_bytes(), record.to_bytes())?;
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditLogError> {
        super::flush(&self.db)?;
        Ok(())
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

    fn last(&self) -> Result<Option<SealedRecord>, AuditLogError> {
        match self.tree.last()? {
            None => Ok(None),
            Some((k, v)) => Ok(Some(SealedRecord::from_bytes(sequence_of(&k)?, &v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::{Action, Actor, Event, Outcome, verify};
    use crate::coordinator::storage::audit_log::{AuditLog, AuditStore};

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
        let open = |db: &sled::Db| {
            AuditLog::open(Arc::new(SledAuditTrail::open(db).unwrap()), key.clone()).unwrap()
        };
        {
            let db = sled::open(dir.path()).unwrap();
            let log = open(&db);
            for i in 0..40 {
                log.append(event(i)).unwrap();
            }
        }
        let db = sled::open(dir.path()).unwrap();
        let log = open(&db);
        assert_eq!(log.last_sequence(), 40);
        log.append(event(999)).unwrap();
        let all = log.list(1, usize::MAX).unwrap();
        let v = verify(&all, &key.verifying_key()).unwrap();
        assert_eq!(v.records, 41);
        assert_eq!(log.list(40, 10).unwrap().len(), 2);
    }
}
