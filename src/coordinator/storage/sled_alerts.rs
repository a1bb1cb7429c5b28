//! Alerts in sled: `alerts` (id → alert), `alert_latest` (identity → id of
//! its newest occurrence; current if that one is not cleared),
//! `alert_events` (cursor → event); JSON values, big-endian u64 keys. A
//! commit is one sled transaction over the three trees.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::alerts::{Alert, AlertEvent, AlertStorage, AlertStore, AlertStoreError};

impl From<sled::Error> for AlertStoreError {
    fn from(e: sled::Error) -> Self {
        AlertStoreError::Backend(Box::new(e))
    }
}

impl From<TransactionError<AlertStoreError>> for AlertStoreError {
    fn from(e: TransactionError<AlertStoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

/// The sled trees that hold alerts and their events.
pub const ALERT_TREES: [&str; 3] = ["alerts", "alert_latest", "alert_events"];

/// The alert trees of one sled database.
pub struct SledAlertStorage {
    db: sled::Db,
    alerts: sled::Tree,
    latest: sled::Tree,
    events: sled::Tree,
}

fn be_u64(bytes: &[u8]) -> Result<u64, AlertStoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| AlertStoreError::Corrupt("key is not 8 bytes".into()))
}

fn last_u64(tree: &sled::Tree) -> Result<u64, AlertStoreError> {
    match tree.last()? {
        Some((k, _)) => be_u64(&k),
        None => Ok(0),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, AlertStoreError> {
    serde_json::to_vec(value).map_err(|e| AlertStoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, AlertStoreError> {
    serde_json::from_slice(bytes).map_err(|e| AlertStoreError::Corrupt(e.to_string()))
}

impl SledAlertStorage {
    /// Opens the alert trees inside an existing sled database.
    pub fn open(db: &sled::Db) -> Result<SledAlertStorage, AlertStoreError> {
        Ok(SledAlertStorage {
            db: db.clone(),
            alerts: db.open_tree(ALERT_TREES[0])?,
            latest: db.open_tree(ALERT_TREES[1])?,
            events: db.open_tree(ALERT_TREES[2])?,
        })
    }
}

impl AlertStore {
    /// The alert store on the alert trees of an existing sled database.
    pub fn open(db: &sled::Db) -> Result<AlertStore, AlertStoreError> {
        AlertStore::with_storage(Arc::new(SledAlertStorage::open(db)?))
    }
}

impl AlertStorage for SledAlertStorage {
    fn get(&self, id: u64) -> Result<Option<Alert>, AlertStoreError> {
        self.alerts
            .get(id.to_be_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    fn newest_id(&self, ident: &[u8]) -> Result<Option<u64>, AlertStoreError> {
        self.latest.get(ident)?.map(|id| be_u64(&id)).transpose()
    }

    fn newest_ids(&self) -> Result<Vec<u64>, AlertStoreError> {
        self.latest.iter().values().map(|id| be_u64(&id?)).collect()
    }

    fn scan(
        &self,
        before: u64,
        oldest_first: bool,
        visit: &mut dyn FnMut(Alert) -> bool,
    ) -> Result<(), AlertStoreError> {
        let range = self.alerts.range(..before.to_be_bytes()).values();
        let values: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = match oldest_first {
            true => Box::new(range),
            false => Box::new(range.rev()),
        };
        for v in values {
            if !visit(decode(&v?)?) {
                break;
            }
        }
        Ok(())
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<AlertEvent>, AlertStoreError> {
        self.events
            .range(after.saturating_add(1).to_be_bytes()..)
            .values()
            .take(limit)
            .map(|v| decode(&v?))
            .collect()
    }

    fn last_alert_id(&self) -> Result<u64, AlertStoreError> {
        last_u64(&self.alerts)
    }

    fn last_cursor(&self) -> Result<u64, AlertStoreError> {
        last_u64(&self.events)
    }

    fn commit(
        &self,
        alerts: &[(Vec<u8>, Alert)],
        events: &[AlertEvent],
    ) -> Result<(), AlertStoreError> {
        let encoded: Vec<(&[u8], u64, Vec<u8>)> = alerts
            .iter()
            .map(|(ident, a)| Ok((ident.as_slice(), a.id, json(a)?)))
            .collect::<Result<_, AlertStoreError>>()?;
        let encoded_events: Vec<(u64, Vec<u8>)> = events
            .iter()
            .map(|e| Ok((e.cursor, json(e)?)))
            .collect::<Result<_, AlertStoreError>>()?;
        (&self.alerts, &self.latest, &self.events).transaction(|(alerts, latest, ev)| {
            for (ident, id, bytes) in &encoded {
                alerts.insert(&id.to_be_bytes(), bytes.as_slice())?;
                latest.insert(*ident, &id.to_be_bytes())?;
            }
            for (cursor, bytes) in &encoded_events {
                ev.insert(&cursor.to_be_bytes(), bytes.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<AlertStoreError>>(())
        })?;
        Ok(())
    }

    fn flush(&self) -> Result<(), AlertStoreError> {
        super::flush(&self.db)?;
        Ok(())
    }

    /// Copies each alert tree into a tree named
    /// `quarantine.<now_unix_ms>.<name>` (bytes as they are), then empties
    /// the original. Returns the new tree names.
    fn quarantine(&self, now_unix_ms: i64) -> Result<Vec<String>, AlertStoreError> {
        let mut moved = Vec::new();
        for (name, tree) in ALERT_TREES
            .into_iter()
            .zip([&self.alerts, &self.latest, &self.events])
        {
            let aside_name = format!("quarantine.{now_unix_ms}.{name}");
            let aside = self.db.open_tree(&aside_name)?;
            for entry in tree.iter() {
                let (k, v) = entry?;
                aside.insert(k, v)?;
            }
            super::flush(&self.db)?;
            tree.clear()?;
            moved.push(aside_name);
        }
        super::flush(&self.db)?;
        Ok(moved)
    }
}
