//! Seizure reports: operator input, kept durably so the engine can be
//! rebuilt with them.

use serde::{Deserialize, Serialize};

use crate::reconcile::Seizure;

/// One report: the items an operator entered together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeizureReport {
    pub id: u64,
    pub reported_at_unix_ms: i64,
    pub items: Vec<Seizure>,
}

/// Why the seizure log failed.
#[derive(Debug, thiserror::Error)]
pub enum SeizureLogError {
    #[error("seizure storage failed: {0}")]
    Backend(#[source] crate::coordinator::storage::BackendError),
    #[error("stored seizure report is corrupt: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for SeizureLogError {
    fn from(e: sled::Error) -> Self {
        SeizureLogError::Backend(Box::new(e))
    }
}

/// Reports in sled tree `seizure_reports`: id → JSON.
pub struct SeizureLog {
    db: sled::Db,
    reports: sled::Tree,
    /// Held while a report takes the next id, so two reports never share one.
    next_id: std::sync::Mutex<()>,
}

impl SeizureLog {
    pub fn open(db: &sled::Db) -> Result<SeizureLog, SeizureLogError> {
        Ok(SeizureLog {
            db: db.clone(),
            reports: db.open_tree("seizure_reports")?,
            next_id: std::sync::Mutex::new(()),
        })
    }

    /// Stores a report durably and returns it with its id: 1 for the first
    /// report, then one more than the newest stored (ids are the tree's keys,
    /// big-endian, so the last key is the largest).
    pub fn record(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, SeizureLogError> {
        let _taking = self
            .next_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = match self.reports.last()? {
            Some((key, _)) => {
                let newest: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                    SeizureLogError::Corrupt(format!("report key of {} bytes", key.len()))
                })?;
                u64::from_be_bytes(newest) + 1
            }
            None => 1,
        };
        let report = SeizureReport {
            id,
            reported_at_unix_ms: now_unix_ms,
            items,
        };
        let bytes =
            serde_json::to_vec(&report).map_err(|e| SeizureLogError::Corrupt(e.to_string()))?;
        self.reports.insert(id.to_be_bytes(), bytes)?;
        crate::coordinator::storage::flush(&self.db)?;
        Ok(report)
    }

    /// Every report, oldest first.
    pub fn all(&self) -> Result<Vec<SeizureReport>, SeizureLogError> {
        self.after(0)
    }

    /// Up to `max_reports` reports with ids above `id`, oldest first, ending
    /// early once their stored size passes `max_bytes` (always at least one
    /// report if there is one). True if more reports follow.
    pub fn page_after(
        &self,
        id: u64,
        max_reports: usize,
        max_bytes: usize,
    ) -> Result<(Vec<SeizureReport>, bool), SeizureLogError> {
        let Some(first) = id.checked_add(1) else {
            return Ok((Vec::new(), false));
        };
        let mut page = Vec::new();
        let mut bytes = 0;
        for value in self.reports.range(first.to_be_bytes()..).values() {
            let value = value?;
            if page.len() >= max_reports || (!page.is_empty() && bytes + value.len() > max_bytes) {
                return Ok((page, true));
            }
            bytes += value.len();
            page.push(
                serde_json::from_slice(&value)
                    .map_err(|e| SeizureLogError::Corrupt(e.to_string()))?,
            );
        }
        Ok((page, false))
    }

    /// The reports with ids above `id`, oldest first.
    pub fn after(&self, id: u64) -> Result<Vec<SeizureReport>, SeizureLogError> {
        let Some(first) = id.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.reports
            .range(first.to_be_bytes()..)
            .values()
            .map(|v| {
                serde_json::from_slice(&v?).map_err(|e| SeizureLogError::Corrupt(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids_count_from_one_and_go_on_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            SeizureLog::open(&db).unwrap()
        };
        let log = open();
        // Other trees taking sled ids must not move the report numbers.
        log.db.generate_id().unwrap();
        assert_eq!(log.record(Vec::new(), 1).unwrap().id, 1);
        assert_eq!(log.record(Vec::new(), 2).unwrap().id, 2);
        drop(log);
        let log = open();
        assert_eq!(log.record(Vec::new(), 3).unwrap().id, 3);
        let ids: Vec<u64> = log.all().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn pages_end_at_the_report_limit_or_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = SeizureLog::open(&db).unwrap();
        for at in 1..=5 {
            log.record(Vec::new(), at).unwrap();
        }
        let ids = |(page, more): (Vec<SeizureReport>, bool)| {
            (page.iter().map(|r| r.id).collect::<Vec<_>>(), more)
        };
        assert_eq!(
            ids(log.page_after(0, 2, usize::MAX).unwrap()),
            (vec![1, 2], true)
        );
        assert_eq!(
            ids(log.page_after(2, 2, usize::MAX).unwrap()),
            (vec![3, 4], true)
        );
        assert_eq!(
            ids(log.page_after(4, 2, usize::MAX).unwrap()),
            (vec![5], false)
        );
        assert_eq!(
            ids(log.page_after(5, 2, usize::MAX).unwrap()),
            (vec![], false)
        );
        assert_eq!(
            ids(log.page_after(u64::MAX, 2, 1).unwrap()),
            (vec![], false)
        );
        // A budget smaller than one report still returns one.
        assert_eq!(ids(log.page_after(0, 100, 1).unwrap()), (vec![1], true));
    }
}
