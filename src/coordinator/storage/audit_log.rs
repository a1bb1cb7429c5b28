//! The audit trail's storage: [`AuditStore`], what the coordinator needs of
//! it, and the chain's head that every backend keeps the same way. The sled
//! backend is `SledAuditLog`, an in-memory one is in `memory`. Appends are
//! serialised and durable before they return, so the chain never forks and
//! an answered RPC's record is kept.

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

/// Where the next record goes.
pub(crate) struct Head {
    next_sequence: u64,
    hash: [u8; 32],
}

impl Head {
    /// The head of an empty trail.
    pub(crate) fn genesis() -> Head {
        Head {
            next_sequence: 1,
            hash: GENESIS_HASH,
        }
    }

    /// The head after `last`, the newest stored record (`None`: no record).
    pub(crate) fn after(last: Option<&SealedRecord>) -> Result<Head, AuditLogError> {
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
    pub(crate) fn seal(&self, event: Event, key: &SigningKey) -> SealedRecord {
        SealedRecord::seal(self.next_sequence, event, &self.hash, key)
    }

    /// Moves past `record`, once it is stored.
    pub(crate) fn advance(&mut self, record: &SealedRecord) {
        self.next_sequence = record.sequence + 1;
        self.hash = record.hash_array().unwrap_or(GENESIS_HASH);
    }

    /// The sequence of the last record (0: none).
    pub(crate) fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }
}
