//! Seizure reports: operator input, kept durably so the engine can be
//! rebuilt with them. [`SeizureStore`] is what the coordinator needs; the
//! sled backend is `SledSeizureStore`, an in-memory one is in `memory`.

use super::BackendError;
use crate::reconcile::Seizure;

/// One report: the items an operator entered together (a domain type, here
/// under the name the stores use).
pub use crate::seizure::SeizureReport;

/// Why the seizure log failed.
#[derive(Debug, thiserror::Error)]
pub enum SeizureLogError {
    #[error("seizure storage failed: {0}")]
    Backend(#[source] BackendError),
    #[error("stored seizure report is corrupt: {0}")]
    Corrupt(String),
}

/// Durable seizure reports.
///
/// [`SeizureStore::record`] is durable once it returns `Ok`. Ids are 1 for
/// the first report, then one more than the newest stored (also after a
/// restart); two reports never share one.
pub trait SeizureStore: Send + Sync + 'static {
    /// Stores a report durably and returns it with its id.
    fn record(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, SeizureLogError>;

    /// Calls `visit` with the stored form (`encode`) of each report whose
    /// id is above `id`, oldest first, until it returns `Ok(false)` or an
    /// error (which this returns). The reading that
    /// [`SeizureStore::page_after`] and [`SeizureStore::after`] share; a
    /// backend implements this one.
    fn scan_after(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool, SeizureLogError>,
    ) -> Result<(), SeizureLogError>;

    /// Up to `max_reports` reports with ids above `id`, oldest first, ending
    /// early once their stored size ([`encode`]) passes `max_bytes` (always
    /// at least one report if there is one). True if more reports follow.
    fn page_after(
        &self,
        id: u64,
        max_reports: usize,
        max_bytes: usize,
    ) -> Result<(Vec<SeizureReport>, bool), SeizureLogError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        self.scan_after(id, &mut |stored| {
            if page.len() >= max_reports || (!page.is_empty() && bytes + stored.len() > max_bytes) {
                more = true;
                return Ok(false);
            }
            bytes += stored.len();
            page.push(decode(stored)?);
            Ok(true)
        })?;
        Ok((page, more))
    }

    /// The reports with ids above `id`, oldest first.
    fn after(&self, id: u64) -> Result<Vec<SeizureReport>, SeizureLogError> {
        let mut reports = Vec::new();
        self.scan_after(id, &mut |stored| {
            reports.push(decode(stored)?);
            Ok(true)
        })?;
        Ok(reports)
    }

    /// Every report, oldest first.
    fn all(&self) -> Result<Vec<SeizureReport>, SeizureLogError> {
        self.after(0)
    }
}

/// A report's stored form (JSON), the size the page budget counts.
pub(crate) fn encode(report: &SeizureReport) -> Result<Vec<u8>, SeizureLogError> {
    serde_json::to_vec(report).map_err(|e| SeizureLogError::Corrupt(e.to_string()))
}

/// A report from its stored form.
pub(crate) fn decode(bytes: &[u8]) -> Result<SeizureReport, SeizureLogError> {
    serde_json::from_slice(bytes).map_err(|e| SeizureLogError::Corrupt(e.to_string()))
}
