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
    Backend(#[from] sled::Error),
    #[error("stored seizure report is corrupt: {0}")]
    Corrupt(String),
}

/// Reports in sled tree `seizure_reports`: id → JSON.
pub struct SeizureLog {
    db: sled::Db,
    reports: sled::Tree,
}

impl SeizureLog {
    pub fn open(db: &sled::Db) -> Result<SeizureLog, SeizureLogError> {
        Ok(SeizureLog {
            db: db.clone(),
            reports: db.open_tree("seizure_reports")?,
        })
    }

    /// Stores a report durably and returns it with its id.
    pub fn record(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, SeizureLogError> {
        let id = self.db.generate_id()? + 1;
        let report = SeizureReport {
            id,
            reported_at_unix_ms: now_unix_ms,
            items,
        };
        let bytes =
            serde_json::to_vec(&report).map_err(|e| SeizureLogError::Corrupt(e.to_string()))?;
        self.reports.insert(id.to_be_bytes(), bytes)?;
        self.db.flush()?;
        Ok(report)
    }

    /// Every report, oldest first.
    pub fn all(&self) -> Result<Vec<SeizureReport>, SeizureLogError> {
        self.reports
            .iter()
            .values()
            .map(|v| {
                serde_json::from_slice(&v?).map_err(|e| SeizureLogError::Corrupt(e.to_string()))
            })
            .collect()
    }
}
