//! The audit trail: [`AuditStore`], what the coordinator needs of it;
//! [`AuditTrail`], what a backend stores (sealed records by sequence); and
//! [`AuditLog`], the one [`AuditStore`], which seals each record with the
//! coordinator's key and keeps the chain's head over any trail. The sled
//! trail is `SledAuditTrail`, an in-memory one is in `memory`. Appends are
//! serialised and durable before they return, so the chain never forks and
//! an answered RPC's record is kept. A trail needs no key: export reads one
//! and import restores one without the coordinator's private key.

use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;

use super::BackendError;
use crate::audit::{Event, GENESIS_HASH, SealedRecord};

/// Why the audit trail could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("audit trail storage failed: {0}")]
    Backend(#[source] BackendError),
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

/// The coordinator's audit trail: signed records, each chained to the one
/// before by its hash (see `crate::audit`).
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `event` as the next record (sequence one more than the last,
    /// chained to its hash, signed with the trail's key) and makes it
    /// durable. A record that was stored but could not be made durable is
    /// readable and keeps its sequence (the error says so): the next record
    /// comes after it.
    fn append(&self, event: Event) -> Result<SealedRecord, AuditLogError>;
    /// Up to `limit` records from `from_sequence` on, as stored (unchecked).
    fn list(&self, from_sequence: u64, limit: usize) -> Result<Vec<SealedRecord>, AuditLogError>;
    /// The sequence of the last record (0: none).
    fn last_sequence(&self) -> u64;
}

/// Sealed records by sequence: what a backend keeps of the audit trail.
/// Sealing and chaining are [`AuditLog`]'s; a trail stores records as they
/// are given and reads them back as stored (unchecked).
pub trait AuditTrail: Send + Sync + 'static {
    /// Stores `record` under its sequence, readable at once; not yet
    /// durable (see [`AuditTrail::flush`]).
    fn put(&self, record: &SealedRecord) -> Result<(), AuditLogError>;
    /// Makes every record stored so far durable.
    fn flush(&self) -> Result<(), AuditLogError>;
    /// Up to `limit` records from `from_sequence` on, oldest first.
    fn list(&self, from_sequence: u64, limit: usize) -> Result<Vec<SealedRecord>, AuditLogError>;
    /// The record with the highest sequence, if any.
    fn last(&self) -> Result<Option<SealedRecord>, AuditLogError>;

    /// Every record, oldest first (export).
    fn all(&self) -> Result<Vec<SealedRecord>, AuditLogError> {
        self.list(0, usize::MAX)
    }

    /// Writes `records` (a whole trail, verified by the caller) into this
    /// trail, which must be empty ([`AuditLogError::NotEmpty`] otherwise),
    /// exactly as they were, and makes them durable: their hashes and the
    /// signatures of the coordinator that sealed them stay valid (import).
    /// An [`AuditLog`] opened on the trail afterwards chains on from the
    /// last of them.
    fn restore(&self, records: &[SealedRecord]) -> Result<(), AuditLogError> {
        if self.last()?.is_some() {
            return Err(AuditLogError::NotEmpty);
        }
        for record in records {
            self.put(record)?;
        }
        self.flush()
    }
}

/// The coordinator's audit trail over any [`AuditTrail`]: seals each event
/// with its key as the next record.
pub struct AuditLog {
    trail: Arc<dyn AuditTrail>,
    key: SigningKey,
    /// Held from sealing a record until it is durable.
    head: Mutex<Head>,
}

impl AuditLog {
    /// The log over `trail`, going on from its last record; records are
    /// signed with `key`. Fails if the last record cannot be chained to.
    pub fn open(trail: Arc<dyn AuditTrail>, key: SigningKey) -> Result<AuditLog, AuditLogError> {
        let head = Head::after(trail.last()?.as_ref())?;
        Ok(AuditLog {
            trail,
            key,
            head: Mutex::new(head),
        })
    }
}

impl AuditStore for AuditLog {
    fn append(&self, event: Event) -> Result<SealedRecord, AuditLogError> {
        // A panic elsewhere while holding the lock leaves the head as it was
        // (it moves only after a successful put), so it stays usable.
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let record = head.seal(event, &self.key);
        self.trail.put(&record)?;
        // Once stored, the record is readable (ListAuditRecords does not
        // take the lock) and may reach disk with a later flush: the head moves
        // past it even if this flush fails, or the next record would be sealed
        // under the same sequence and replace one a reader may have copied.
        head.advance(&record);
        self.trail.flush()?;
        Ok(record)
    }

    fn list(&self, from_sequence: u64, limit: usize) -> Result<Vec<SealedRecord>, AuditLogError> {
        self.trail.list(from_sequence, limit)
    }

    fn last_sequence(&self) -> u64 {
        self.head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_sequence()
    }
}

/// Where the next record goes.
struct Head {
    next_sequence: u64,
    hash: [u8; 32],
}

impl Head {
    /// The head of an empty trail.
    fn genesis() -> Head {
        Head {
            next_sequence: 1,
            hash: GENESIS_HASH,
        }
    }

    /// The head after `last`, the newest stored record (`None`: no record).
    fn after(last: Option<&SealedRecord>) -> Result<Head, AuditLogError> {
        Ok(match last {
            None => Head::genesis(),
            Some(last) => Head {
                next_sequence: last.sequence + 1,
                hash: last
                    .hash_array()
                    .ok_or(AuditLogError::DamagedHead(last.sequence))?,
            },
        })
    }

    /// `event` sealed as the next record.
    fn seal(&self, event: Event, key: &SigningKey) -> SealedRecord {
        SealedRecord::seal(self.next_sequence, event, &self.hash, key)
    }

    /// Moves past `record`, once it is stored.
    fn advance(&mut self, record: &SealedRecord) {
        self.next_sequence = record.sequence + 1;
        self.hash = record.hash_array().unwrap_or(GENESIS_HASH);
    }

    /// The sequence of the last record (0: none).
    fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }
}
