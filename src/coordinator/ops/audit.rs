//! The audit trail, read back (auditor).

use super::{Caller, Ops, OpsError};
use crate::access::Operation;
use crate::audit::SealedRecord;

/// Default and largest page of `ListAuditRecords`.
const PAGE_MAX: usize = 1000;

/// A page of the trail, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct AuditPage {
    pub records: Vec<SealedRecord>,
    /// The newest record's sequence (0 if none).
    pub last_sequence: u64,
}

impl Ops {
    /// The records from sequence `from` (0 or 1: the first) on, at most
    /// `limit` (0: 1000; at most 1000) (auditor).
    pub fn list_audit_records(
        &self,
        caller: &Caller,
        from: u64,
        limit: usize,
    ) -> Result<AuditPage, OpsError> {
        self.permit(caller, Operation::ListAuditRecords)?;
        let limit = match limit {
            0 => PAGE_MAX,
            n => n.min(PAGE_MAX),
        };
        let records = self.audit.list(from.max(1), limit)?;
        Ok(AuditPage {
            records,
            last_sequence: self.audit.last_sequence(),
        })
    }
}
