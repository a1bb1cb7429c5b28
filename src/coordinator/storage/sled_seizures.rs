//! Seizure reports in sled.

use super::seizures::{SeizureLogError, SeizureReport, SeizureStore, encode};
use crate::reconcile::Seizure;

impl From<sled::Error> for SeizureLogError {
    fn from(e: sled::Error) -> Self {
        SeizureLogError::Backend(Box::new(e))
    }
}

/// Reports in sled tree `seizure_reports`: id → JSON.
pub struct SledSeizureStore {
    db: sled::Db,
    reports: sled::Tree,
    /// Held while a report takes the next id, so two reports never share one.
    next_id: std::sync::Mutex<()>,
}

impl SledSeizureStore {
    pub fn open(db: &sled::Db) -> Result<SledSeizureStore, SeizureLogError> {
        Ok(SledSeizureStore {
            db: db.clone(),
            reports: db.open_tree("seizure_reports")?,
            next_id: std::sync::Mutex::new(()),
        })
    }
}

impl SeizureStore for SledSeizureStore {
    /// Ids are the tree's keys, big-endian, so the last key is the largest.
    fn record(
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
        self.reports.insert(id.to_be_bytes(), encode(&report)?)?;
        super::flush(&self.db)?;
        Ok(report)
    }

    fn scan_after(
        &self,
        id: u64,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool, SeizureLogError>,
    ) -> Result<(), SeizureLogError> {
        let Some(first) = id.checked_add(1) else {
            return Ok(());
        };
        for value in self.reports.range(first.to_be_bytes()..).values() {
            if !visit(&value?)? {
                break;
            }
        }
        Ok(())
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
            SledSeizureStore::open(&db).unwrap()
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
}
