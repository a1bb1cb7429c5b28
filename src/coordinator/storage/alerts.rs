//! Durable alerts and their event log.
//!
//! The engine decides which conditions hold; this module gives each
//! occurrence of a condition an id, keeps its history, and records every
//! change as an event with a strictly increasing cursor. An alert and the
//! event that changed it are committed together ([`AlertStorage::commit`]),
//! so a watcher that resumes from its last cursor sees exactly what
//! happened. [`AlertStorage`] is the persistence below that lifecycle; the
//! sled backend is `SledAlertStorage`, an in-memory one is in `memory`.
//!
//! Identity: at most one *current* alert per [`AlertKey`]. When a condition
//! clears, its alert stays (status `cleared`) and stops being current; if the
//! condition returns, a new alert is opened that links to the old one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

pub use super::sled_alerts::ALERT_TREES;
use crate::reconcile::{AlertChange, AlertKey};
use crate::serial::ItemKey;
pub use tally_core::alert::{
    Alert, AlertEvent, AlertStatus, EventKind, HistoryEntry, MAX_NOTE_BYTES, ResolutionReason,
};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no alert with id {0}")]
    NotFound(u64),
    #[error("the note is {len} bytes long; at most {max} bytes are allowed")]
    NoteTooLong { len: usize, max: usize },
    #[error("alert {id} is {status:?}; it cannot be {action}")]
    InvalidTransition {
        id: u64,
        status: AlertStatus,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] AlertStoreError),
    /// Committed, so visible and in effect, but the flush failed: it reaches
    /// disk with the next successful write, or is lost in a crash before.
    #[error(
        "alert {id} was changed, but the change could not be flushed to disk ({source}); it is \
         in effect now and is lost only if the coordinator stops before its next successful \
         write: tell the coordinator's administrator"
    )]
    NotDurable { id: u64, source: AlertStoreError },
}

/// Why the alert store failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("alert storage failed: {0}")]
    Backend(#[source] crate::coordinator::storage::BackendError),
    #[error("stored alert record is corrupt: {0}")]
    Corrupt(String),
}

/// What the alert store needs from durable storage: alerts by id, the
/// newest occurrence of each condition (by its identity, see [`identity`]),
/// and the event log by cursor. The lifecycle (ids, cursors, transitions,
/// the item index, live watchers) stays in [`AlertStore`].
pub trait AlertStorage: Send + Sync + 'static {
    /// The alert with this id.
    fn get(&self, id: u64) -> Result<Option<Alert>, AlertStoreError>;
    /// The id of the newest occurrence of the condition `ident`.
    fn newest_id(&self, ident: &[u8]) -> Result<Option<u64>, AlertStoreError>;
    /// The newest occurrence's id of every condition seen, by identity.
    fn newest_ids(&self) -> Result<Vec<u64>, AlertStoreError>;
    /// Calls `visit` with the alerts whose id is below `before`, newest
    /// first (oldest first if `oldest_first`), until it returns false.
    fn scan(
        &self,
        before: u64,
        oldest_first: bool,
        visit: &mut dyn FnMut(Alert) -> bool,
    ) -> Result<(), AlertStoreError>;
    /// Events with a cursor greater than `after`, oldest first, at most `limit`.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<AlertEvent>, AlertStoreError>;
    /// The largest alert id stored (0: none).
    fn last_alert_id(&self) -> Result<u64, AlertStoreError>;
    /// The largest event cursor stored (0: none).
    fn last_cursor(&self) -> Result<u64, AlertStoreError>;
    /// Writes `alerts` (each becoming the newest occurrence of its identity)
    /// and `events` as one: a reader sees all of them or none. Not yet
    /// durable (see [`AlertStorage::flush`]).
    fn commit(
        &self,
        alerts: &[(Vec<u8>, Alert)],
        events: &[AlertEvent],
    ) -> Result<(), AlertStoreError>;
    /// Makes everything committed so far durable.
    fn flush(&self) -> Result<(), AlertStoreError>;
    /// Moves everything stored aside, as it is (records that do not decode
    /// too), for a person to inspect, and leaves the storage empty; returns
    /// where it went, in the backend's names. Used when the stored alerts
    /// cannot be read, so the coordinator can rebuild them from the stored
    /// snapshots instead of refusing to start. Durable when it returns.
    fn quarantine(&self, now_unix_ms: i64) -> Result<Vec<String>, AlertStoreError>;
}

/// Alerts, their lifecycle and their watchers, over an [`AlertStorage`].
pub struct AlertStore {
    storage: Arc<dyn AlertStorage>,
    /// Serialises writers so ids and cursors are handed out in order.
    next: Mutex<Counters>,
    /// The newest cursor committed, set as soon as the transaction is, and
    /// readable without waiting for a writer (which holds `next` across its
    /// flush): `WatchAlerts` checks cursors against it on the async runtime.
    newest_cursor: AtomicU64,
    /// Committed events, in cursor order, for live watchers. Bounded: a
    /// watcher that falls behind gets `Lagged` and re-reads from storage.
    live: tokio::sync::broadcast::Sender<AlertEvent>,
    /// Item key → ids of every alert about it, for traces. Built from the
    /// stored alerts on first use (one scan), then kept up to date by
    /// [`AlertStore::write`]; derived, so never persisted.
    by_item: Mutex<Option<HashMap<ItemKey, BTreeSet<u64>>>>,
}

/// Events buffered for live watchers before a slow one must re-read storage.
const LIVE_BUFFER: usize = 4096;

struct Counters {
    alert_id: u64,
    cursor: u64,
}

/// The identity of a condition: at most one current alert per identity.
pub fn identity(key: &AlertKey) -> Vec<u8> {
    // JSON of a struct with fixed field order: stable, and readable in a dump.
    serde_json::to_vec(key).unwrap_or_default()
}

impl AlertStore {
    /// The alert store over `storage`.
    pub(crate) fn with_storage(
        storage: Arc<dyn AlertStorage>,
    ) -> Result<AlertStore, AlertStoreError> {
        let next = Counters {
            alert_id: storage.last_alert_id()? + 1,
            cursor: storage.last_cursor()? + 1,
        };
        Ok(AlertStore {
            storage,
            newest_cursor: AtomicU64::new(next.cursor - 1),
            next: Mutex::new(next),
            live: tokio::sync::broadcast::channel(LIVE_BUFFER).0,
            by_item: Mutex::new(None),
        })
    }

    /// Live events from now on (pair with [`AlertStore::events_after`]).
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AlertEvent> {
        self.live.subscribe()
    }

    pub fn get(&self, id: u64) -> Result<Option<Alert>, AlertStoreError> {
        self.storage.get(id)
    }

    /// The newest occurrence of a condition, cleared or not.
    fn newest(&self, ident: &[u8]) -> Result<Option<Alert>, AlertStoreError> {
        match self.storage.newest_id(ident)? {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// The current occurrence of a condition: its newest, unless cleared.
    pub fn current(&self, key: &AlertKey) -> Result<Option<Alert>, AlertStoreError> {
        Ok(self
            .newest(&identity(key))?
            .filter(|a| a.status != AlertStatus::Cleared))
    }

    /// Every alert whose condition currently holds (open, acknowledged, or
    /// resolved by an operator while the condition still holds).
    pub fn current_alerts(&self) -> Result<Vec<Alert>, AlertStoreError> {
        let mut out = Vec::new();
        for id in self.storage.newest_ids()? {
            if let Some(a) = self.get(id)?
                && a.status != AlertStatus::Cleared
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// All stored alerts, by id.
    pub fn all(&self) -> Result<Vec<Alert>, AlertStoreError> {
        let mut all = Vec::new();
        self.storage.scan(u64::MAX, true, &mut |alert| {
            all.push(alert);
            true
        })?;
        Ok(all)
    }

    /// Every stored alert about `item`, in any status, by id.
    ///
    /// Reads only those alerts, through an in-memory index from item key to
    /// alert ids that the first call builds by scanning every alert.
    pub(crate) fn for_item(&self, item: &ItemKey) -> Result<Vec<Alert>, AlertStoreError> {
        let ids: Vec<u64> = {
            // The index is only ever replaced whole, so a poisoned lock
            // still guards a consistent value.
            let mut index = self
                .by_item
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if index.is_none() {
                let mut built: HashMap<ItemKey, BTreeSet<u64>> = HashMap::new();
                self.storage.scan(u64::MAX, true, &mut |alert| {
                    if let Some(key) = alert.key.item {
                        built.entry(key).or_default().insert(alert.id);
                    }
                    true
                })?;
                *index = Some(built);
            }
            index
                .as_ref()
                .and_then(|i| i.get(item))
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(alert) = self.get(id)?
                && alert.key.item.as_ref() == Some(item)
            {
                out.push(alert);
            }
        }
        Ok(out)
    }

    /// One page of alerts, newest first: those with id below `before` that
    /// `keep` accepts, at most `limit`; and whether more follow.
    pub(crate) fn page_before(
        &self,
        before: u64,
        limit: usize,
        keep: impl Fn(&Alert) -> bool,
    ) -> Result<(Vec<Alert>, bool), AlertStoreError> {
        let mut out = Vec::with_capacity(limit);
        let mut more = false;
        self.storage.scan(before, false, &mut |alert| {
            if keep(&alert) {
                if out.len() == limit {
                    more = true;
                    return false;
                }
                out.push(alert);
            }
            true
        })?;
        Ok((out, more))
    }

    /// Events with a cursor greater than `after`, oldest first, at most `limit`.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AlertEvent>, AlertStoreError> {
        self.storage.events_after(after, limit)
    }

    /// The newest cursor in storage (0 if none): [`AlertStore::last_cursor`]
    /// read from disk, for the moment between a commit and its counting.
    pub(crate) fn last_stored_cursor(&self) -> Result<u64, AlertStoreError> {
        self.storage.last_cursor()
    }

    /// The newest cursor handed out (0 if none).
    pub fn last_cursor(&self) -> u64 {
        self.newest_cursor.load(Ordering::Acquire)
    }

    /// Records the engine's changes as alert updates and events, all in one
    /// transaction, then flushes.
    pub fn apply(
        &self,
        changes: &[AlertChange],
        now_unix_ms: i64,
    ) -> Result<Vec<AlertEvent>, AlertStoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut next = self
            .next
            .lock()
            .map_err(|_| AlertStoreError::Corrupt("alert counter lock poisoned".into()))?;
        let mut counters = Counters {
            alert_id: next.alert_id,
            cursor: next.cursor,
        };
        // Alerts touched by this batch, by identity: a key can change twice in
        // one batch (e.g. by a snapshot and by the clock).
        let mut touched: HashMap<Vec<u8>, Alert> = HashMap::new();
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            let ident = identity(change.key());
            let newest = match touched.remove(&ident) {
                Some(a) => Some(a),
                None => self.newest(&ident)?,
            };
            let (alert, event) =
                match Self::next_state(&mut counters, change, newest.clone(), now_unix_ms) {
                    Some(pair) => pair,
                    None => {
                        if let Some(a) = newest {
                            touched.insert(ident, a);
                        }
                        continue;
                    }
                };
            touched.insert(ident, alert);
            events.push(event);
        }
        let alerts: Vec<(Vec<u8>, Alert)> = touched.into_iter().collect();
        self.commit(&alerts, &events)?;
        // Committed: the ids and cursors are taken even if the flush fails,
        // or the next change would reuse them and overwrite these records.
        *next = counters;
        self.storage.flush()?;
        self.publish(&events);
        Ok(events)
    }

    /// Writes alerts and events together (not yet flushed).
    fn commit(
        &self,
        alerts: &[(Vec<u8>, Alert)],
        events: &[AlertEvent],
    ) -> Result<(), AlertStoreError> {
        self.storage.commit(alerts, events)?;
        // At once: a watcher replaying from storage can already read these
        // events, and may come back with their cursors.
        if let Some(last) = events.last() {
            self.newest_cursor.fetch_max(last.cursor, Ordering::Release);
        }
        // After the commit: a first `for_item` scanning meanwhile either saw
        // these alerts or gets them here.
        if let Some(index) = self
            .by_item
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            for (_, alert) in alerts {
                if let Some(key) = &alert.key.item {
                    index.entry(key.clone()).or_default().insert(alert.id);
                }
            }
        }
        Ok(())
    }

    /// Hands committed events to live watchers. Called with the counter lock
    /// held, so watchers see cursors in order.
    fn publish(&self, events: &[AlertEvent]) {
        for e in events {
            // No watcher is not an error.
            let _ = self.live.send(e.clone());
        }
    }

    /// An operator acknowledges an open alert.
    pub fn acknowledge(&self, id: u64, note: &str, now: i64) -> Result<Alert, ActionError> {
        self.act(
            id,
            now,
            EventKind::Acknowledged,
            note,
            None,
            |status| match status {
                AlertStatus::Open => Ok(AlertStatus::Acknowledged),
                _ => Err("acknowledged"),
            },
        )
    }

    /// An operator resolves an open or acknowledged alert with a reason.
    pub fn resolve(
        &self,
        id: u64,
        reason: ResolutionReason,
        note: &str,
        now: i64,
    ) -> Result<Alert, ActionError> {
        self.act(
            id,
            now,
            EventKind::Resolved,
            note,
            Some(reason),
            |status| match status {
                AlertStatus::Open | AlertStatus::Acknowledged => Ok(AlertStatus::Resolved),
                _ => Err("resolved"),
            },
        )
    }

    /// An operator reopens a resolved alert (its condition still holds:
    /// cleared alerts cannot be reopened; a returning condition opens anew).
    pub(crate) fn reopen(&self, id: u64, note: &str, now: i64) -> Result<Alert, ActionError> {
        self.act(
            id,
            now,
            EventKind::Reopened,
            note,
            None,
            |status| match status {
                AlertStatus::Resolved => Ok(AlertStatus::Open),
                _ => Err("reopened"),
            },
        )
    }

    fn act(
        &self,
        id: u64,
        now: i64,
        kind: EventKind,
        note: &str,
        reason: Option<ResolutionReason>,
        transition: impl FnOnce(AlertStatus) -> Result<AlertStatus, &'static str>,
    ) -> Result<Alert, ActionError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(ActionError::NoteTooLong {
                len: note.len(),
                max: MAX_NOTE_BYTES,
            });
        }
        let mut next = self
            .next
            .lock()
            .map_err(|_| AlertStoreError::Corrupt("alert counter lock poisoned".into()))?;
        let mut alert = self.get(id)?.ok_or(ActionError::NotFound(id))?;
        alert.status =
            transition(alert.status).map_err(|action| ActionError::InvalidTransition {
                id,
                status: alert.status,
                action,
            })?;
        let cursor = next.cursor;
        alert.updated_at_unix_ms = now;
        alert.history.push(HistoryEntry {
            cursor,
            at_unix_ms: now,
            action: kind,
            by: None,
            note: note.to_string(),
            reason,
        });
        let event = AlertEvent {
            cursor,
            alert_id: id,
            kind,
            at_unix_ms: now,
            key: alert.key.clone(),
            status: alert.status,
        };
        self.commit(
            &[(identity(&alert.key), alert.clone())],
            std::slice::from_ref(&event),
        )?;
        next.cursor += 1;
        self.storage
            .flush()
            .map_err(|source| ActionError::NotDurable { id, source })?;
        self.publish(std::slice::from_ref(&event));
        Ok(alert)
    }

    /// The alert after `change`, and its event; `None` if the change does
    /// not apply (updating or clearing a condition that is not current).
    fn next_state(
        counters: &mut Counters,
        change: &AlertChange,
        newest: Option<Alert>,
        now: i64,
    ) -> Option<(Alert, AlertEvent)> {
        let key = change.key();
        let current = newest.clone().filter(|a| a.status != AlertStatus::Cleared);
        let (mut alert, kind, by, note) = match (change, current) {
            (AlertChange::Opened { body, by, .. }, None) => {
                let alert = Alert {
                    id: counters.alert_id,
                    key: key.clone(),
                    status: AlertStatus::Open,
                    body: body.clone(),
                    opened_at_unix_ms: now,
                    updated_at_unix_ms: now,
                    previous_occurrence: newest.map(|a| a.id),
                    history: Vec::new(),
                };
                counters.alert_id += 1;
                (alert, EventKind::Opened, *by, body.summary.clone())
            }
            (AlertChange::Opened { body, by, .. }, Some(mut a)) => {
                a.body = body.clone();
                (a, EventKind::Updated, *by, body.summary.clone())
            }
            (AlertChange::Updated { body, by, .. }, Some(mut a)) => {
                a.body = body.clone();
                (a, EventKind::Updated, *by, body.summary.clone())
            }
            (AlertChange::Cleared { by, .. }, Some(mut a)) => {
                a.status = AlertStatus::Cleared;
                let note = match by {
                    Some(b) => format!("cleared by {} sequence {}", b.state, b.sequence),
                    None => "cleared".to_string(),
                };
                (a, EventKind::Cleared, *by, note)
            }
            (AlertChange::Updated { .. } | AlertChange::Cleared { .. }, None) => return None,
        };
        let cursor = counters.cursor;
        counters.cursor += 1;
        alert.updated_at_unix_ms = now;
        alert.history.push(HistoryEntry {
            cursor,
            at_unix_ms: now,
            action: kind,
            by,
            note,
            reason: None,
        });
        let event = AlertEvent {
            cursor,
            alert_id: alert.id,
            kind,
            at_unix_ms: now,
            key: key.clone(),
            status: alert.status,
        };
        Some((alert, event))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reconcile::AlertBody;

    /// A critical alert to open in a test store: two snapshots for KAZ 3.
    pub(crate) fn conflict_opened() -> AlertChange {
        AlertChange::Opened {
            key: AlertKey {
                kind: crate::reconcile::AlertKind::ConflictingSubmission,
                item: None,
                state: Some(crate::state::StateCode::parse("KAZ").unwrap()),
                counterparty: None,
                sequence: Some(3),
            },
            body: AlertBody {
                severity: crate::reconcile::Severity::High,
                spellings: Vec::new(),
                states: Vec::new(),
                summary: "two snapshots for KAZ 3".into(),
                evidence: Vec::new(),
                custody: None,
                seizures: Vec::new(),
            },
            by: None,
        }
    }

    /// `WatchAlerts` reads the newest cursor on the async runtime, so it
    /// must not wait for a writer, which holds the counters across a flush.
    #[test]
    fn the_newest_cursor_is_read_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = std::sync::Arc::new(AlertStore::open(&db).unwrap());
        let writing = store.next.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = store.clone();
        std::thread::spawn(move || tx.send(reader.last_cursor()));
        let read = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(writing);
        assert_eq!(read, Ok(0));
    }

    /// A committed event can be replayed from storage before its writer
    /// finishes (it waits here for the item index, which a first trace may
    /// hold for a long scan); a watcher coming back with its cursor must not
    /// be told that the cursor is beyond the newest event.
    #[test]
    fn the_newest_cursor_counts_an_event_from_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = std::sync::Arc::new(AlertStore::open(&db).unwrap());
        let opened = conflict_opened();
        let indexing = store.by_item.lock().unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || store.apply(&[opened], 1_000).map(|e| e.len()))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.last_cursor() == 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let newest = store.last_cursor();
        let writer_waiting = !writer.is_finished();
        let replayable = store.events_after(0, 10).unwrap().len();
        drop(indexing);
        assert_eq!(writer.join().unwrap().unwrap(), 1);
        assert_eq!((newest, writer_waiting, replayable), (1, true, 1));
    }
}
