//! The coordinator's side of reconciliation: feeds accepted snapshots from the
//! store into the engine, in acceptance order, and records the resulting
//! alert changes durably.
//!
//! The engine's state is derived: at start-up it is rebuilt by replaying the
//! stored snapshots (and equivocations, and seizure reports) without emitting
//! anything, and then compared with the persisted alerts; only the
//! differences become events (for example the effect of a snapshot that was
//! accepted just before a crash and never reconciled). The same comparison
//! runs before the next change after a failure between changing the engine
//! and recording the alerts (a storage error, or one half-way through a
//! catch-up): the alert store lags the engine only until then.
//!
//! A coordinator that stops cleanly writes the engine's state to a
//! checkpoint file ([`CHECKPOINT_FILE`] in the store's directory, see
//! `reconcile::Engine::write_checkpoint`). Start-up reads it back when it is
//! intact, was written under the same settings and names, for every state,
//! a snapshot the store holds with the same digest; then only the snapshots
//! accepted after it are replayed. Otherwise it replays everything. Either
//! way the result is compared with the persisted alerts as above. The store
//! only ever appends to a state's chain, so an older checkpoint stays a valid
//! starting point after later snapshots (or a crash).
//!
//! The engine runs without evidence lines ([`NoLines`]); the lines of the
//! alerts that changed are read from the stored snapshots afterwards (see
//! `Reconciler::with_lines`), and the rebuild compares the persisted bodies
//! with their lines stripped.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::coordinator::lookup::{
    CachePolicy, ChunkIndex, PIECE_LOG2, PieceStarts, SnapshotLookup,
};
use crate::coordinator::storage::alerts::{AlertEvent, AlertStore, AlertStoreError};
use crate::coordinator::storage::seizures::{SeizureLogError, SeizureReport, SeizureStore};
use crate::coordinator::storage::{SnapshotStore, StoreError, StoredSnapshot};
use crate::reconcile::{
    AlertChange, Engine, EngineConfig, EquivocationRef, ItemView, Line, LineSource, NoLines,
    Seizure, SnapshotRef, attach_lines,
};
use crate::serial::ItemKey;
use crate::snapshot::SnapshotDigest;
use crate::snapshot::leaf::leaves;
use crate::state::StateCode;

/// Why reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alerts(#[from] AlertStoreError),
    #[error(
        "stored snapshot {state} {sequence} could not be read: {source} (its chunk files are \
         missing or damaged: restore the store from a backup or an export)"
    )]
    Unreadable {
        state: StateCode,
        sequence: u64,
        #[source]
        source: StoreError,
    },
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
    #[error("writing the engine checkpoint {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// File name of the engine checkpoint in the store's directory.
pub const CHECKPOINT_FILE: &str = "engine.checkpoint";

/// The reconciler's own bookkeeping, kept in the checkpoint with the engine.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointExtra {
    equivocations_seen: Vec<(StateCode, u64, SnapshotDigest)>,
    /// Highest seizure report id given to the engine.
    seizure_reports_through: u64,
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
    /// Highest seizure report id given to the engine.
    seizure_reports_through: u64,
    /// Whether a snapshot, equivocation or seizure report was applied since
    /// the last checkpoint (or start-up).
    changed_since_checkpoint: bool,
    /// Whether the engine may hold changes the alert store did not record:
    /// set before each change, cleared once its alerts are recorded, so a
    /// failure in between (storage, mid-way through a catch-up) leaves it
    /// set, and the next change first brings the alert store in line with
    /// the engine, as start-up does (see [`Reconciler::change`]).
    alerts_behind: bool,
}

impl State {
    fn new(engine: Engine) -> State {
        State {
            engine,
            applied: HashMap::new(),
            equivocations_seen: HashSet::new(),
            seizure_reports_through: 0,
            changed_since_checkpoint: false,
            alerts_behind: false,
        }
    }

    /// The state kept in the checkpoint at `path`, if it can be used with
    /// `store` (see the module documentation); says why not otherwise.
    fn restore(
        path: &Path,
        store: &dyn SnapshotStore,
        seizures: &dyn SeizureStore,
        config: &EngineConfig,
    ) -> Option<State> {
        let not_used = |reason: &dyn std::fmt::Display| {
            tracing::warn!(
                path = %path.display(),
                reason = %reason,
                "engine checkpoint not used: rebuilding from every stored snapshot"
            );
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                not_used(&e);
                return None;
            }
        };
        let (engine, extra) =
            match Engine::read_checkpoint(config, BufReader::with_capacity(1 << 20, file)) {
                Ok(read) => read,
                Err(e) => {
                    not_used(&e);
                    return None;
                }
            };
        let extra: CheckpointExtra = match serde_json::from_value(extra) {
            Ok(extra) => extra,
            Err(e) => {
                not_used(&format!("coordinator data: {e}"));
                return None;
            }
        };
        // Besides the snapshots, the seizure reports and equivocations it
        // counts as applied must be this store's (not, say, those of a newer
        // store whose sled directory was replaced by an older backup).
        let reports_known = match seizures.all() {
            Ok(reports) => {
                extra.seizure_reports_through == 0
                    || reports
                        .iter()
                        .any(|r| r.id == extra.seizure_reports_through)
            }
            Err(e) => {
                not_used(&e);
                return None;
            }
        };
        let equivocations_known = match store.equivocations() {
            Ok(stored) => {
                let stored: HashSet<(StateCode, u64, SnapshotDigest)> = stored
                    .iter()
                    .map(|e| {
                        (
                            e.signed.header.state,
                            e.signed.header.sequence,
                            e.signed.digest(),
                        )
                    })
                    .collect();
                extra.equivocations_seen.iter().all(|e| stored.contains(e))
            }
            Err(e) => {
                not_used(&e);
                return None;
            }
        };
        if !reports_known || !equivocations_known {
            not_used(&"it counts seizure reports or equivocations this store does not hold");
            return None;
        }
        let mut applied = HashMap::new();
        for latest in engine.latest_snapshots() {
            match store.get(latest.state, latest.sequence) {
                Ok(Some(stored)) if stored.digest == latest.digest => {}
                Ok(_) => {
                    not_used(&format!(
                        "it was written for {} sequence {}, which this store does not hold \
                         with the same digest",
                        latest.state, latest.sequence
                    ));
                    return None;
                }
                Err(e) => {
                    not_used(&e);
                    return None;
                }
            }
            applied.insert(latest.state, latest.sequence);
        }
        Some(State {
            engine,
            applied,
            equivocations_seen: extra.equivocations_seen.into_iter().collect(),
            seizure_reports_through: extra.seizure_reports_through,
            changed_since_checkpoint: false,
            alerts_behind: false,
        })
    }
}

/// Engine plus storage: the coordinator's reconciliation service.
pub struct Reconciler {
    state: Mutex<State>,
    store: Arc<dyn SnapshotStore>,
    alerts: Arc<AlertStore>,
    seizures: Arc<dyn SeizureStore>,
    lines: StoreLines,
    /// Where the engine checkpoint is read at start-up and written at stop.
    checkpoint: Option<PathBuf>,
    /// Whether start-up continued from the checkpoint.
    from_checkpoint: bool,
    /// One checkpoint write at a time (they share the temporary file).
    checkpoint_writer: Mutex<()>,
}

impl Reconciler {
    /// Rebuilds the engine (from the checkpoint at `checkpoint` if it can,
    /// else from every stored snapshot) and brings the persisted alerts in
    /// line with it.
    pub fn open(
        store: Arc<dyn SnapshotStore>,
        alerts: Arc<AlertStore>,
        seizures: Arc<dyn SeizureStore>,
        config: EngineConfig,
        now_unix_ms: i64,
        checkpoint: Option<PathBuf>,
    ) -> Result<Reconciler, ReconcileError> {
        let started = std::time::Instant::now();
        let restored = checkpoint
            .as_deref()
            .and_then(|path| State::restore(path, store.as_ref(), seizures.as_ref(), &config));
        let from_checkpoint = restored.is_some();
        if from_checkpoint {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "engine checkpoint read"
            );
        }
        let reconciler = Reconciler {
            state: Mutex::new(restored.unwrap_or_else(|| State::new(Engine::new(config)))),
            lines: StoreLines(Arc::new(SnapshotLookup::new(store.clone()))),
            store,
            alerts,
            seizures,
            checkpoint,
            from_checkpoint,
            checkpoint_writer: Mutex::new(()),
        };
        {
            let mut state = reconciler
                .state
                .lock()
                .map_err(|_| ReconcileError::Poisoned)?;
            // Silent replay: the changes are not events, only the end state
            // counts. Seizure reports go in where they came live, by time
            // (see `catch_up_locked`).
            // Later acceptance times come after every logged report's.
            let reports = reconciler.seizures.all()?;
            if let Some(latest) = reports.iter().map(|r| r.reported_at_unix_ms).max() {
                reconciler.store.issue_time(latest)?;
            }
            reconciler.catch_up_locked(&mut state, now_unix_ms, None)?;
            let engine = &state.engine;
            let changes = reconciler.differences_from_engine(engine)?;
            let changes = reconciler.with_lines(changes);
            let events = reconciler.alerts.apply(&changes, now_unix_ms)?;
            tracing::info!(
                keys = engine.key_count(),
                open_alerts = engine.open_alerts().len(),
                recorded_changes = events.len(),
                from_checkpoint,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "reconciliation state rebuilt from stored snapshots"
            );
        }
        Ok(reconciler)
    }

    /// Whether start-up continued from an engine checkpoint instead of
    /// replaying every stored snapshot.
    pub fn started_from_checkpoint(&self) -> bool {
        self.from_checkpoint
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
        self.change(&mut state, now_unix_ms, |me, state| {
            me.catch_up_locked(state, now_unix_ms, None)
        })
    }

    /// Records a seizure report durably, matches each item and records the
    /// resulting alert changes.
    pub fn report_seizures(
        &self,
        items: Vec<Seizure>,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        // The report's time comes from the store, which issues acceptance
        // times: every snapshot accepted before it has an earlier time and is
        // already committed, so the catch-up applies it first; every later
        // one gets a later time. A rebuild puts a report after exactly the
        // snapshots accepted before its time: the same order, even when
        // acceptance times run ahead of this clock.
        let reported_at = self.store.issue_time(now_unix_ms)?;
        self.record_report(&mut state, items, reported_at, now_unix_ms)
    }

    /// As [`Reconciler::report_seizures`] for a report that already has its
    /// time (import): keeps that time.
    pub(crate) fn replay_seizure_report(
        &self,
        items: Vec<Seizure>,
        reported_at_unix_ms: i64,
    ) -> Result<SeizureReport, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        self.record_report(&mut state, items, reported_at_unix_ms, reported_at_unix_ms)
    }

    fn record_report(
        &self,
        state: &mut State,
        items: Vec<Seizure>,
        reported_at: i64,
        now_unix_ms: i64,
    ) -> Result<SeizureReport, ReconcileError> {
        // The snapshots accepted before the report come first. Their changes
        // are recorded first, so a failure to record the report cannot lose
        // them.
        self.change(state, now_unix_ms, |me, state| {
            me.catch_up_locked(state, now_unix_ms, Some(reported_at))
        })?;
        let report = self.seizures.record(items, reported_at)?;
        // The logged reports not applied yet: this one (the catch-up above
        // applied any earlier one whose recording failed after it was
        // written).
        self.change(state, now_unix_ms, |me, state| {
            let mut changes = Vec::new();
            for logged in me.seizures.after(state.seizure_reports_through)? {
                for item in logged.items {
                    changes.extend(state.engine.apply_seizure(item, &NoLines, now_unix_ms));
                }
                state.seizure_reports_through = logged.id;
                state.changed_since_checkpoint = true;
            }
            Ok(changes)
        })?;
        Ok(report)
    }

    pub(crate) fn seizure_log(&self) -> &Arc<dyn SeizureStore> {
        &self.seizures
    }

    /// Applies the clock alone (transfer grace periods, cadences).
    pub fn tick(&self, now_unix_ms: i64) -> Result<Vec<AlertEvent>, ReconcileError> {
        let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        self.change(&mut state, now_unix_ms, |_, state| {
            Ok(state.engine.tick(&NoLines, now_unix_ms))
        })
    }

    /// Runs `apply`, which changes the engine and returns the alert changes,
    /// and records those changes in the alert store. If an earlier change
    /// failed between the two (see `State::alerts_behind`), first records
    /// what the alert store lacks, so that a storage failure costs the
    /// store an alert only until the next change, not until a restart.
    fn change(
        &self,
        state: &mut State,
        now_unix_ms: i64,
        apply: impl FnOnce(&Self, &mut State) -> Result<Vec<AlertChange>, ReconcileError>,
    ) -> Result<Vec<AlertEvent>, ReconcileError> {
        let mut events = Vec::new();
        if state.alerts_behind {
            let missing = self.differences_from_engine(&state.engine)?;
            events = self.alerts.apply(&self.with_lines(missing), now_unix_ms)?;
            state.alerts_behind = false;
            tracing::warn!(
                recorded_changes = events.len(),
                "alert store brought back in line with the engine after a failure"
            );
        }
        state.alerts_behind = true;
        let changes = apply(self, state)?;
        events.extend(self.alerts.apply(&self.with_lines(changes), now_unix_ms)?);
        state.alerts_behind = false;
        Ok(events)
    }

    /// The changes that make the alert store's current alerts those the
    /// engine holds open: used at start-up and after a failure.
    fn differences_from_engine(&self, engine: &Engine) -> Result<Vec<AlertChange>, ReconcileError> {
        let mut changes = Vec::new();
        let persisted = self.alerts.current_alerts()?;
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
        let persisted_by_key: HashMap<_, _> = persisted.iter().map(|a| (&a.key, &a.body)).collect();
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
                    by: None,
                });
            }
        }
        Ok(changes)
    }

    /// Fills in the item lines of the alert bodies that changed.
    ///
    /// The engine runs without evidence lines and keeps bodies without them:
    /// a key's lines in an accepted snapshot never change, so they can be
    /// read here, only for the alerts that were opened or updated, instead
    /// of for every alert the engine re-evaluates (see [`attach_lines`]).
    fn with_lines(&self, mut changes: Vec<AlertChange>) -> Vec<AlertChange> {
        for change in &mut changes {
            if let AlertChange::Opened { key, body, .. } | AlertChange::Updated { key, body, .. } =
                change
                && let Some(item) = &key.item
            {
                attach_lines(body, item, &self.lines);
            }
        }
        changes
    }

    /// Writes the engine checkpoint (to a temporary file, synced, then
    /// renamed over the old one), if this reconciler has a checkpoint path,
    /// and, with `only_if_changed`, only if something was applied since the
    /// last one. Holds the engine while the state is written out (not while
    /// it is synced to disk). Returns the path and the file's size.
    pub fn write_checkpoint(
        &self,
        only_if_changed: bool,
    ) -> Result<Option<(PathBuf, u64)>, ReconcileError> {
        let Some(path) = &self.checkpoint else {
            return Ok(None);
        };
        let _one_writer = self
            .checkpoint_writer
            .lock()
            .map_err(|_| ReconcileError::Poisoned)?;
        let temporary = path.with_extension("tmp");
        let failed = |source| ReconcileError::Checkpoint {
            path: path.clone(),
            source,
        };
        let file = {
            let mut state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
            if only_if_changed && !state.changed_since_checkpoint {
                return Ok(None);
            }
            let mut equivocations_seen: Vec<_> = state.equivocations_seen.iter().copied().collect();
            equivocations_seen.sort();
            let extra = CheckpointExtra {
                equivocations_seen,
                seizure_reports_through: state.seizure_reports_through,
            };
            let write = || -> std::io::Result<std::fs::File> {
                let file = std::fs::File::create(&temporary)?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                let extra = serde_json::to_value(&extra).map_err(std::io::Error::other)?;
                state.engine.write_checkpoint(extra, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())
            };
            let file = write().map_err(failed)?;
            state.changed_since_checkpoint = false;
            file
        };
        let finish = || -> std::io::Result<u64> {
            file.sync_all()?;
            let size = file.metadata()?.len();
            std::fs::rename(&temporary, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(size)
        };
        match finish() {
            Ok(size) => Ok(Some((path.clone(), size))),
            Err(e) => {
                // Try again next time.
                if let Ok(mut state) = self.state.lock() {
                    state.changed_since_checkpoint = true;
                }
                Err(failed(e))
            }
        }
    }

    /// Runs `f` with read access to the engine.
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> Result<T, ReconcileError> {
        let state = self.state.lock().map_err(|_| ReconcileError::Poisoned)?;
        Ok(f(&state.engine))
    }

    /// Applies the snapshots not yet applied, in acceptance order, with the
    /// logged seizure reports not yet applied each before the first snapshot
    /// accepted after its time: the order they came in live, and the order
    /// of a rebuild. The order matters for the alert bodies, not for which
    /// alerts are open: a report re-evaluates its key, and a later snapshot
    /// that leaves the key's rows as they were does not, so its evidence
    /// names the snapshot current at the report. With `accepted_until`, only
    /// the snapshots accepted at or before that time (a report's): one
    /// committed after the report's time was issued waits for the next
    /// catch-up, after the report, where a rebuild puts it too.
    fn catch_up_locked(
        &self,
        state: &mut State,
        now: i64,
        accepted_until: Option<i64>,
    ) -> Result<Vec<AlertChange>, ReconcileError> {
        // Snapshots not yet applied, each at its acceptance time raised to
        // the latest one before it in its chain: a store written before
        // times were issued under the commit lock can hold a later time
        // earlier in a chain, and chain order comes first (as in import).
        let mut pending: Vec<(i64, StoredSnapshot)> = Vec::new();
        for code in self.store.states()? {
            let applied = state.applied.get(&code).copied().unwrap_or(0);
            let mut at = match applied {
                0 => i64::MIN,
                n => self
                    .store
                    .get(code, n)?
                    .map_or(i64::MIN, |s| s.receipt.accepted_at_unix_ms),
            };
            for snapshot in self.store.list(code, applied + 1, usize::MAX)? {
                at = at.max(snapshot.receipt.accepted_at_unix_ms);
                pending.push((at, snapshot));
            }
        }
        // Those times never decrease along a chain, so this keeps a prefix
        // of every state's pending snapshots.
        if let Some(until) = accepted_until {
            pending.retain(|(at, _)| *at <= until);
        }
        pending.sort_by_key(|(at, s)| (*at, s.signed.header.state, s.signed.header.sequence));
        let mut reports = self.seizures.after(state.seizure_reports_through)?;
        reports.sort_by_key(|r| (r.reported_at_unix_ms, r.id));
        let mut reports = reports.into_iter().peekable();
        // New equivocations in the order they were recorded, as live: the
        // alert of a sequence with two names the later one. Each goes in
        // before the first snapshot accepted after it, as live (a refusal
        // that records one reconciles before it is answered).
        let mut equivocations: Vec<_> = self
            .store
            .equivocations()?
            .into_iter()
            .filter(|e| {
                !state.equivocations_seen.contains(&(
                    e.signed.header.state,
                    e.signed.header.sequence,
                    e.signed.digest(),
                ))
            })
            .collect();
        equivocations.sort_by_key(|e| e.recorded_at_unix_ms);
        let mut equivocations = equivocations.into_iter().peekable();
        let mut changes = Vec::new();
        let apply_equivocation = |state: &mut State,
                                  e: crate::coordinator::storage::Equivocation,
                                  changes: &mut Vec<_>| {
            let header = &e.signed.header;
            let submitted = e.signed.digest();
            if state
                .equivocations_seen
                .insert((header.state, header.sequence, submitted))
            {
                state.changed_since_checkpoint = true;
                changes.extend(state.engine.apply_equivocation(&EquivocationRef {
                    state: header.state,
                    sequence: header.sequence,
                    submitted,
                    conflicts_with: e.conflicts_with,
                }));
            }
        };
        let apply_report = |state: &mut State, report: SeizureReport, changes: &mut Vec<_>| {
            for item in report.items {
                changes.extend(state.engine.apply_seizure(item, &NoLines, now));
            }
            state.seizure_reports_through = state.seizure_reports_through.max(report.id);
            state.changed_since_checkpoint = true;
        };
        // Reports and equivocations before `until` (all if `None`), merged
        // by their times, which the store issues in one order with
        // acceptances.
        let mut apply_before = |state: &mut State, until: Option<i64>, changes: &mut Vec<_>| loop {
            let due = |t: i64| until.is_none_or(|u| t < u);
            let report = reports
                .peek()
                .map(|r| r.reported_at_unix_ms)
                .filter(|t| due(*t));
            let equivocation = equivocations
                .peek()
                .map(|e| e.recorded_at_unix_ms)
                .filter(|t| due(*t));
            let report_first = match (report, equivocation) {
                (Some(r), Some(e)) => r <= e,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if report_first {
                if let Some(r) = reports.next() {
                    apply_report(state, r, changes);
                }
            } else if let Some(e) = equivocations.next() {
                apply_equivocation(state, e, changes);
            }
        };
        for (at, snapshot) in &pending {
            apply_before(state, Some(*at), &mut changes);
            changes.extend(self.apply_snapshot(state, snapshot, now)?);
            state.changed_since_checkpoint = true;
        }
        // With `accepted_until`, what came later waits for the snapshots
        // accepted before it, at the next catch-up.
        apply_before(
            state,
            accepted_until.map(|u| u.saturating_add(1)),
            &mut changes,
        );
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
        let unreadable = |source| ReconcileError::Unreadable {
            state: header.state,
            sequence: header.sequence,
            source,
        };
        let chunks: Vec<Vec<u8>> = self
            .store
            .chunks(snapshot)
            .map_err(unreadable)?
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
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
        let index = ChunkIndex::new(snapshot.clone(), starts.finish());
        if let Err(e) = self.lines.0.insert_and_keep(&index) {
            // Derived data: lookups rebuild it from the leaves if it is missing.
            tracing::warn!(error = %e, "could not keep a snapshot's piece index");
        }
        self.lines.0.insert(index);
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
        // After a restart from a checkpoint, the snapshots reconciled before
        // it are indexed on first use (from the piece starts kept in the store).
        let index = match self.0.index_for(snapshot.state, snapshot.sequence) {
            Ok(Some(index)) if index.snapshot().digest == snapshot.digest => index,
            Ok(_) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, %key, "could not index a stored snapshot for evidence");
                return Vec::new();
            }
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
