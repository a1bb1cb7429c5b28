//! The coordinator's side of reconciliation: feeds accepted snapshots from the
//! store into the engine, in acceptance order, and records the resulting
//! alert changes durably.
//!
//! The engine's state is derived: at start-up it is rebuilt by replaying the
//! stored snapshots (and equivocations, and seizure reports) without emitting
//! anything, and then compared with the persisted alerts; only the
//! differences become events (for example the effect of a snapshot that was
//! accepted just before a crash and never reconciled).
//!
//! The engine runs without evidence lines ([`NoLines`]); the lines of the
//! alerts that changed are read from the stored snapshots afterwards (see
//! `Reconciler::with_lines`), and the rebuild compares the persisted bodies
//! with their lines stripped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::alerts::{AlertEvent, AlertStore, AlertStoreError};
use crate::lookup::{CachePolicy, ChunkIndex, PIECE_LOG2, PieceStarts, SnapshotLookup};
use crate::reconcile::{
    AlertChange, Engine, EngineConfig, EquivocationRef, ItemView, Line, LineSource, NoLines,
    Seizure, SnapshotRef, attach_lines,
};
use crate::seizures::{SeizureLog, SeizureLogError, SeizureReport};
use crate::serial::ItemKey;
use crate::snapshot::SnapshotDigest;
use crate::snapshot::leaf::leaves;
use crate::state::StateCode;
use crate::store::{SnapshotStore, StoreError, StoredSnapshot};

/// Why reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error("stored snapshot {state} {sequence} has an unreadable leaf: {reason}")]
    BadLeaf {
        state: StateCode,
        sequence: u64,
        reason: String,
    },
    #[error(transparent)]
    Seizures(#[from] SeizureLogError),
    #[error("reconciler lock poisoned")]
    Poisoned,
}

fn snapshot_ref(s: &StoredSnapshot) -> SnapshotRef {
    SnapshotRef {
        state: s.signed.header.state,
        sequence: s.signed.header.sequence,
        digest: s.digest,
        as_of_unix_ms: s.signed.header.as_of_unix_ms,
    }
}

struct State {
    engine: Engine,
    /// Last reconciled sequence per state.
    applied: HashMap<StateCode, u64>,
    /// Equivocation records already given to the engine, by state, sequence
    /// and submitted digest. A set, not a count: the store lists records by
    /// state and sequence, so a new one can sort before older ones.
    equivocations_seen: HashSet<(StateCode, u64, SnapshotDigest)>,
}

/// Engine plus storage: the coordinator's reconciliation service.
pub struct Reconciler {
    state: Mutex<State>,
    store: Arc<dyn SnapshotStore>,
    alerts: Arc<AlertStore>,
    seizures: Arc<SeizureLog>,
    lines: StoreLines,
}

impl Reconciler {
    /// Rebuilds the engine from the store and brings the persisted alerts in
    /// line with it.
    pub fn open(
        store: Arc<dyn SnapshotStore>,
        alerts: Arc<AlertStore>,
        seizures: Arc<SeizureLog>,
        config: EngineConfig,
        now_unix_ms: i64,
    ) -> Result<Reconciler, ReconcileError> {
        let reconciler = Reconciler {
            state: Mutex::new(State {
                engine: Engine::new(config),
                applied: HashMap::new(),
                equivocations_seen: HashSet::new(),
            }),
            lines: StoreLines(Arc::new(SnapshotLookup::new(store.clone()))),
            store,
            alerts,
            seizures,
        };
        let started = std::time::Instant::now();
        {
            let mut state = reconciler
                .state
                .lock()
                .map_err(|_| ReconcileError::Poisoned)?;
            // Silent replay: the changes are not events, only the end state
            // counts. Seizure alerts depend only on the reports and the
            // current custody, so reports can follow the snapshots.
            reconciler.catch_up_locked(&mut state, now_unix_ms)?;
            for report in reconciler.seizures.all()? {
                for item in report.items {
                    state.engine.apply_seizure(item, &NoLines, now_unix_ms);
                }
            }
            let engine = &state.engine;
            let mut changes = Vec::new();
            let persisted = reconciler.alerts.current_alerts()?;
            for alert in &persisted {
                if !engine.open_alerts().contains_key(&alert.key) {
                    changes.push(AlertChange::Cleared {
                        key: alert.key.clone(),
                        by: None,
                    });
                }
            }
            // The engine keeps bodies without item lines (see `with_lines`):
            // compare the persisted bodies stripped of them.
            let persisted_by_key: HashMap<_, _> =
                persisted.iter().map(|a| (&a.key, &a.body)).collect();
            for (key, body) in engine.open_alerts() {
                let same = persisted_by_key.get(key).is_some_and(|&p| {
                    let mut stripped = p.clone();
                    if let Some(item) = &key.item {
                        attach_lines(&mut stripped, item, &NoLines);
                    }
                    stripped == *body
                });
                if !same {
                    changes.push(AlertChange::Opened {
                        key: key.clone(),
                        body: body.clone(),
                    });
                }
            }
            let changes = reconciler.with_lines(changes);
            let events = reconciler.alerts.apply(&changes, now_unix_ms)?;
            tracing::info!(
                keys = engine.key_count(),
                open_alerts = engine.open_alerts().len(),
                recorded_changes = events.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "reconciliation state rebuilt from stored snapshots"
            );
        }
        Ok(reconciler)
    }

    pub fn alerts(&self) -> &Arc<AlertStore> {
        &self.alerts
    }

    /// Key lookups over the stored snapshots, indexed as they are reconciled.
    pub fn lookup(&self) -> &Arc<SnapshotLookup> {
        &self.lines.0
    }

    /// Reconciles every accepted snapshot and equivocation not yet applied,
    /// applies the clock, and records the changes. Blocks: call it off the
    /// async runtime.
    pub fn catch_up(&self, now_unix_ms: i64) -> Result<Vec<AlertEvent>, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        let changes = self.catch_up_locked(&mut state, now_unix_ms)?;
        let changes = self.with_lines(changes);
        Ok(self.alerts.apply(&changes, now_unix_ms)?)
    }

    /// Records a seizure report durably, matches each item and records the
    /// resulting alert changes.
    pub fn report_seizures(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        let report = self.seizures.record(items, now_unix_ms)?;
        let mut changes = Vec::new();
        for item in &report.items {
            changes.extend(
                state
                    .engine
                    .apply_seizure(item.clone(), &NoLines, now_unix_ms),
            );
        }
        let changes = self.with_lines(changes);
        self.alerts.apply(&changes, now_unix_ms)?;
        Ok(report)
    }

    pub fn seizure_log(&self) -> &Arc<SeizureLog> {
        &self.seizures
    }

    /// Applies the clock alone (transfer grace periods, cadences).
    pub fn tick(&self, now_unix_ms: i64) -> Result<Vec<AlertEvent>, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        let changes = state.engine.tick(&NoLines, now_unix_ms);
        let changes = self.with_lines(changes);
        Ok(self.alerts.apply(&changes, now_unix_ms)?)
    }

    /// Fills in the item lines of the alert bodies that changed.
    ///
    /// The engine runs without evidence lines and keeps bodies without them:
    /// a key's lines in an accepted snapshot never change, so they can be
    /// read here, only for the alerts that were opened or updated, instead
    /// of for every alert the engine re-evaluates (see [`attach_lines`]).
    fn with_lines(&self, mut changes: Vec<AlertChange>) -> Vec<AlertChange> {
        for change in &mut changes {
            if let AlertChange::Opened { key, body } | AlertChange::Updated { key, body } = change
                && let Some(item) = &key.item
            {
                attach_lines(body, item, &self.lines);
            }
        }
        changes
    }

    /// Runs `f` with read access to the engine.
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T, ReconcileError> {
        let state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        Ok(f(&state.engine))
    }

    fn catch_up_locked(
        &self,
        state: &mut State,
        now: i64,
    ) -> Result<Vec<AlertChange>, ReconcileError> {
        // Snapshots not yet applied, in acceptance order across states.
        let mut pending: Vec<StoredSnapshot> = Vec::new();
        for code in self.store.states()? {
            let from = state.applied.get(&code).copied().unwrap_or(0) + 1;
            pending.extend(self.store.list(code, from, usize::MAX)?);
        }
        pending.sort_by_key(|s| {
            (
                s.receipt.accepted_at_unix_ms,
                s.signed.header.state,
                s.signed.header.sequence,
            )
        });
        let mut changes = Vec::new();
        for snapshot in &pending {
            changes.extend(self.apply_snapshot(state, snapshot, now)?);
        }
        for e in self.store.equivocations()? {
            let header = &e.signed.header;
            let submitted = e.signed.digest();
            if state
                .equivocations_seen
                .insert((header.state, header.sequence, submitted))
            {
                changes.extend(state.engine.apply_equivocation(&EquivocationRef {
                    state: header.state,
                    sequence: header.sequence,
                    submitted,
                    conflicts_with: e.conflicts_with,
                }));
            }
        }
        changes.extend(state.engine.tick(&NoLines, now));
        Ok(changes)
    }

    fn apply_snapshot(
        &self,
        state: &mut State,
        snapshot: &StoredSnapshot,
        now: i64,
    ) -> Result<Vec<AlertChange>, ReconcileError> {
        let header = &snapshot.signed.header;
        let chunks: Vec<Vec<u8>> = self.store.chunks(snapshot)?.collect::<Result<_, _>>()?;
        let bad = |reason: String| ReconcileError::BadLeaf {
            state: header.state,
            sequence: header.sequence,
            reason,
        };
        // Parse everything first: a stored snapshot was verified at
        // acceptance, so a failure here means the store is damaged.
        let mut views: Vec<ItemView<'_>> = Vec::with_capacity(header.item_count as usize);
        let mut starts = PieceStarts::new(PIECE_LOG2);
        for (number, chunk) in (0u32..).zip(&chunks) {
            let mut offset = 0;
            for leaf in leaves(chunk) {
                let (leaf, bytes) = leaf.map_err(|e| bad(e.to_string()))?;
                starts.leaf(number, offset, &leaf);
                offset += bytes.len();
                views.push(ItemView::from(leaf));
            }
        }
        let reference = snapshot_ref(snapshot);
        self.lines
            .0
            .insert(ChunkIndex::new(snapshot.clone(), starts.finish()));
        let changes = state.engine.apply_snapshot(reference, views, &NoLines, now);
        state.applied.insert(header.state, header.sequence);
        Ok(changes)
    }
}

/// Evidence lines for the engine, read from stored snapshots through the
/// shared [`SnapshotLookup`] (binary search over each snapshot's chunk index,
/// recorded when the snapshot was reconciled, then inside the chunk).
struct StoreLines(Arc<SnapshotLookup>);

impl LineSource for StoreLines {
    fn lines(&self, snapshot: &SnapshotRef, key: &ItemKey) -> Vec<Line> {
        let Some(index) = self.0.indexed(snapshot.state, snapshot.sequence) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let found = self.0.rows(
            &index,
            (key.model.as_str(), key.serial.as_str()),
            CachePolicy::Keep,
            |row| out.push(ItemView::from(row.leaf).line()),
        );
        if let Err(e) = found {
            // Evidence text is best effort; the alert itself stands.
            tracing::warn!(error = %e, %key, "could not read evidence lines");
        }
        out
    }
}
