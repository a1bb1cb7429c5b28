//! The incremental engine. See the module docs of `reconcile` for the rules.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;

use crate::item::Status;
use crate::serial::ItemKey;
use crate::state::StateCode;

use super::keys::{KeyId, KeyTable};
use super::model::*;

mod checkpoint;
pub use checkpoint::{CheckpointError, FORMAT_VERSION as CHECKPOINT_FORMAT_VERSION};

/// Settings of the time-based rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long after the declaring snapshot's as-of time a transfer must
    /// show up at the receiving state before `transfer_not_received` opens.
    pub transfer_grace_ms: i64,
    /// Expected cadence per state; states not listed are never overdue.
    pub cadence_ms: BTreeMap<StateCode, i64>,
}

/// Bits of a cell: one per status (bit `code - 1`), plus "listed twice".
type Cell = u8;
const DUP: Cell = 1 << 6;
const STATUS_BITS: Cell = 0b0011_1111;

fn bit(status: Status) -> Cell {
    1 << (status.code() - 1)
}

const HELD: Cell = (1 << (Status::InService as u8 - 1)) | (1 << (Status::InStorage as u8 - 1));
const DISPOSED: Cell = (1 << (Status::Expended as u8 - 1)) | (1 << (Status::Destroyed as u8 - 1));
const LOST: Cell = 1 << (Status::Lost as u8 - 1);

fn statuses(cell: Cell) -> Vec<Status> {
    Status::ALL
        .into_iter()
        .filter(|s| cell & bit(*s) != 0)
        .collect()
}

/// Per-key hints: which side records may exist for a key. Set when a record
/// is added and never cleared, so a clear bit means "certainly none" and the
/// common case (no records at all) costs one byte read instead of a hash
/// lookup per state and per map.
const HINT_VANISHED: u8 = 1;
const HINT_TRANSFER: u8 = 1 << 1;
const HINT_MENTION: u8 = 1 << 2;
const HINT_LAST_HELD: u8 = 1 << 3;

/// Index of a state inside the engine.
type StateIdx = u8;

/// What the engine knows about one state's latest snapshot.
struct StateSlot {
    code: StateCode,
    latest: Option<SnapshotRef>,
    /// Keys listed in the latest snapshot, each once.
    keys: Vec<KeyId>,
    /// Per key id: the statuses the latest snapshot lists (0: not listed).
    /// Shorter than the key table when the newest keys are not listed here.
    cells: Vec<Cell>,
    /// `transferred_out` declarations of the latest snapshot: key → receiving states.
    declared: HashMap<KeyId, Vec<StateCode>>,
}

impl StateSlot {
    fn cell(&self, id: KeyId) -> Cell {
        self.cells.get(id as usize).copied().unwrap_or(0)
    }

    fn set_cell(&mut self, id: KeyId, cell: Cell) {
        let i = id as usize;
        if i >= self.cells.len() {
            if cell == 0 {
                return;
            }
            self.cells.resize(i + 1, 0);
        }
        self.cells[i] = cell;
    }
}

#[derive(Debug, Clone, Copy)]
struct Vanished {
    last_held: SnapshotRef,
    absent_in: SnapshotRef,
}

#[derive(Debug, Clone, Copy)]
struct Transfer {
    to: StateCode,
    declared_in: SnapshotRef,
}

/// A state's last mention of a key it no longer lists.
#[derive(Debug, Clone, Copy)]
struct LastMention {
    /// The last snapshot that listed the key, and what it listed.
    listed_in: SnapshotRef,
    cell: Cell,
    /// The next snapshot of the state: the first that did not list it.
    absent_in: SnapshotRef,
}

#[derive(Debug, Clone, Copy)]
struct LastHeld {
    held_in: SnapshotRef,
    gone_in: SnapshotRef,
}

/// The reconciliation engine: derived state plus the open alerts.
pub struct Engine {
    config: EngineConfig,
    keys: KeyTable,
    states: Vec<StateSlot>,
    state_index: HashMap<StateCode, StateIdx>,
    vanished: HashMap<(KeyId, StateIdx), Vanished>,
    transfers: HashMap<(KeyId, StateIdx), Vec<Transfer>>,
    disposals: HashMap<KeyId, Vec<(SnapshotRef, Cell)>>,
    last_mention: HashMap<(KeyId, StateIdx), LastMention>,
    last_held: HashMap<(KeyId, StateIdx), LastHeld>,
    seizures: HashMap<KeyId, Vec<Seizure>>,
    equivocations: BTreeMap<(StateCode, u64), EquivocationRef>,
    /// Transfer grace deadlines still to be looked at: (deadline, key).
    deadlines: BTreeSet<(i64, KeyId)>,
    open: BTreeMap<AlertKey, AlertBody>,
    /// Open alerts that concern an item key, by key id.
    open_by_key: HashMap<KeyId, Vec<AlertKey>>,
    /// Scratch: which keys the snapshot being applied has listed already.
    touched: Vec<bool>,
    /// Per key id: `HINT_*` bits.
    hints: Vec<u8>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            keys: KeyTable::default(),
            states: Vec::new(),
            state_index: HashMap::new(),
            vanished: HashMap::new(),
            transfers: HashMap::new(),
            disposals: HashMap::new(),
            last_mention: HashMap::new(),
            last_held: HashMap::new(),
            seizures: HashMap::new(),
            equivocations: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            open: BTreeMap::new(),
            open_by_key: HashMap::new(),
            touched: Vec::new(),
            hints: Vec::new(),
        }
    }

    fn hint(&self, id: KeyId) -> u8 {
        self.hints.get(id as usize).copied().unwrap_or(0)
    }

    fn set_hint(&mut self, id: KeyId, bit: u8) {
        let i = id as usize;
        if i >= self.hints.len() {
            self.hints.resize(i + 1, 0);
        }
        self.hints[i] |= bit;
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Every open alert, by identity.
    pub fn open_alerts(&self) -> &BTreeMap<AlertKey, AlertBody> {
        &self.open
    }

    /// Number of distinct item keys ever seen.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The latest applied snapshot of `state`.
    pub fn latest(&self, state: StateCode) -> Option<SnapshotRef> {
        self.state_index
            .get(&state)
            .and_then(|&i| self.states[i as usize].latest)
    }

    /// The latest applied snapshot of every state, in the order states
    /// first appeared.
    pub fn latest_snapshots(&self) -> impl Iterator<Item = SnapshotRef> + '_ {
        self.states.iter().filter_map(|slot| slot.latest)
    }

    /// The slot of a state, created on first sight. Panics past
    /// [`super::MAX_STATES`] states: the coordinator's configuration refuses
    /// more members than that, and only members' snapshots are accepted.
    fn slot_index(&mut self, code: StateCode) -> StateIdx {
        if let Some(&i) = self.state_index.get(&code) {
            return i;
        }
        assert!(
            self.states.len() < super::MAX_STATES,
            "more than {} states",
            super::MAX_STATES
        );
        let i = self.states.len() as StateIdx;
        self.states.push(StateSlot {
            code,
            latest: None,
            keys: Vec::new(),
            cells: Vec::new(),
            declared: HashMap::new(),
        });
        self.state_index.insert(code, i);
        i
    }

    /// Reconciles one accepted snapshot (snapshots of one state must come in
    /// sequence order). Returns the alert changes it causes, including those
    /// of the clock at `now_unix_ms`.
    pub fn apply_snapshot<'a>(
        &mut self,
        snapshot: SnapshotRef,
        items: impl IntoIterator<Item = ItemView<'a>>,
        lines: &dyn LineSource,
        now_unix_ms: i64,
    ) -> Vec<AlertChange> {
        let s = self.slot_index(snapshot.state);
        let previous = self.states[s as usize].latest;

        // 1. Intern the new snapshot's keys and build its cells, remembering
        //    the old cell of every key it lists.
        let mut old_cells: Vec<(KeyId, Cell)> = Vec::new();
        let mut new_keys: Vec<KeyId> = Vec::new();
        let mut new_declared: HashMap<KeyId, Vec<StateCode>> = HashMap::new();
        for item in items {
            let id = self
                .keys
                .intern(item.canonical_model, item.canonical_serial);
            if self.touched.len() <= id as usize {
                self.touched.resize(id as usize + 1, false);
            }
            let slot = &mut self.states[s as usize];
            let b = bit(item.status);
            if self.touched[id as usize] {
                let c = slot.cell(id);
                slot.set_cell(id, c | b | DUP);
            } else {
                self.touched[id as usize] = true;
                old_cells.push((id, slot.cell(id)));
                new_keys.push(id);
                slot.set_cell(id, b);
            }
            if let (Status::TransferredOut, Some(to)) = (item.status, item.counterparty) {
                let list = new_declared.entry(id).or_default();
                if !list.contains(&to) {
                    list.push(to);
                }
            }
        }

        // 2. Keys that changed: a different cell, different declarations, or
        //    no longer listed at all.
        let slot = &mut self.states[s as usize];
        let old_declared = std::mem::take(&mut slot.declared);
        let mut changed: Vec<(KeyId, Cell, Cell)> = Vec::new();
        for &(id, old) in &old_cells {
            let new = slot.cell(id);
            if new != old || old_declared.get(&id) != new_declared.get(&id) {
                changed.push((id, old, new));
            }
        }
        let old_keys = std::mem::take(&mut slot.keys);
        for &id in &old_keys {
            if !self.touched.get(id as usize).copied().unwrap_or(false) {
                let old = slot.cell(id);
                slot.set_cell(id, 0);
                changed.push((id, old, 0));
            }
        }
        for &id in &new_keys {
            self.touched[id as usize] = false;
        }
        slot.keys = new_keys;
        slot.declared = new_declared;
        slot.latest = Some(snapshot);

        // 3. Update the records that outlive a snapshot.
        for &(id, old, new) in &changed {
            let before = old_declared.get(&id).map_or(&[][..], Vec::as_slice);
            self.update_records(id, s, (old, new), before, previous, snapshot);
        }

        // 4. Evaluate the changed keys, then every seized key (its custody
        //    depends on the as-of times of other states' snapshots, not only
        //    on its own rows; seizures are few), then the clock.
        let mut out = Vec::new();
        for &(id, _, _) in &changed {
            self.evaluate_key(id, lines, now_unix_ms, By::snapshot(snapshot), &mut out);
        }
        let mut seized: Vec<KeyId> = self.seizures.keys().copied().collect();
        seized.sort_unstable();
        for id in seized {
            self.evaluate_key(id, lines, now_unix_ms, By::snapshot(snapshot), &mut out);
        }
        self.evaluate_clock(lines, now_unix_ms, Some(snapshot), &mut out);
        out
    }

    /// `declared_before`: the receiving states the previous snapshot declared
    /// for this key.
    fn update_records(
        &mut self,
        id: KeyId,
        s: StateIdx,
        (old, new): (Cell, Cell),
        declared_before: &[StateCode],
        previous: Option<SnapshotRef>,
        snapshot: SnapshotRef,
    ) {
        let k = (id, s);
        // Vanished: held before, absent now. Any mention ends it.
        if new != 0 {
            self.vanished.remove(&k);
            self.last_mention.remove(&k);
        } else if let Some(prev) = previous {
            self.last_mention.insert(
                k,
                LastMention {
                    listed_in: prev,
                    cell: old,
                    absent_in: snapshot,
                },
            );
            self.set_hint(id, HINT_MENTION);
            if old & HELD != 0 {
                self.set_hint(id, HINT_VANISHED);
                self.vanished.insert(
                    k,
                    Vanished {
                        last_held: prev,
                        absent_in: snapshot,
                    },
                );
            }
        }
        // Last held: the last snapshot that held the key and the first that did not.
        if new & HELD != 0 {
            self.last_held.remove(&k);
        } else if old & HELD != 0
            && let Some(prev) = previous
        {
            self.set_hint(id, HINT_LAST_HELD);
            self.last_held.insert(
                k,
                LastHeld {
                    held_in: prev,
                    gone_in: snapshot,
                },
            );
        }
        // Transfers: withdraw records the snapshot contradicts, open new ones.
        let declared: Vec<StateCode> = self.states[s as usize]
            .declared
            .get(&id)
            .cloned()
            .unwrap_or_default();
        if !declared.is_empty() {
            self.set_hint(id, HINT_TRANSFER);
        }
        if self.hint(id) & HINT_TRANSFER == 0 {
            return self.record_disposal(id, new, snapshot);
        }
        let records = self.transfers.entry(k).or_default();
        if new != 0 {
            records.retain(|t| declared.contains(&t.to));
        }
        for to in declared {
            if !declared_before.contains(&to) && !records.iter().any(|t| t.to == to) {
                records.push(Transfer {
                    to,
                    declared_in: snapshot,
                });
                let deadline = snapshot
                    .as_of_unix_ms
                    .saturating_add(self.config.transfer_grace_ms);
                self.deadlines.insert((deadline, id));
            }
        }
        if records.is_empty() {
            self.transfers.remove(&k);
        }
        self.record_disposal(id, new, snapshot);
    }

    /// Disposals: the first declaring snapshot of each state, forever.
    fn record_disposal(&mut self, id: KeyId, new: Cell, snapshot: SnapshotRef) {
        if new & DISPOSED != 0 {
            let list = self.disposals.entry(id).or_default();
            if !list.iter().any(|(r, _)| r.state == snapshot.state) {
                list.push((snapshot, new & DISPOSED));
            }
        }
    }

    /// Records a conflicting signed header; opens its alert.
    pub fn apply_equivocation(&mut self, e: &EquivocationRef) -> Vec<AlertChange> {
        let key = AlertKey {
            kind: AlertKind::ConflictingSubmission,
            item: None,
            state: Some(e.state),
            counterparty: None,
            sequence: Some(e.sequence),
        };
        self.equivocations
            .entry((e.state, e.sequence))
            .or_insert_with(|| e.clone());
        let body = AlertBody {
            severity: AlertKind::ConflictingSubmission.severity(),
            spellings: Vec::new(),
            states: vec![e.state],
            summary: format!(
                "{} signed two different snapshots for sequence {}: {} conflicts with {}",
                e.state, e.sequence, e.submitted, e.conflicts_with
            ),
            evidence: Vec::new(),
            custody: None,
            seizures: Vec::new(),
        };
        let mut out = Vec::new();
        self.set_alert(None, key, Some(body), By::NOTHING, &mut out);
        out
    }

    /// Records a seized item; opens or updates its alert with the custody trail.
    pub fn apply_seizure(
        &mut self,
        seizure: Seizure,
        lines: &dyn LineSource,
        now_unix_ms: i64,
    ) -> Vec<AlertChange> {
        let id = self
            .keys
            .intern(seizure.key.model.as_str(), seizure.key.serial.as_str());
        self.seizures.entry(id).or_default().push(seizure);
        let mut out = Vec::new();
        self.evaluate_key(id, lines, now_unix_ms, By::NOTHING, &mut out);
        self.evaluate_clock(lines, now_unix_ms, None, &mut out);
        out
    }

    /// Applies the clock alone: transfer grace periods and cadences.
    pub fn tick(&mut self, lines: &dyn LineSource, now_unix_ms: i64) -> Vec<AlertChange> {
        let mut out = Vec::new();
        self.evaluate_clock(lines, now_unix_ms, None, &mut out);
        out
    }

    /// The custody trail of a key, as far as the engine knows it.
    pub fn custody(&self, key: &ItemKey) -> Custody {
        match self.keys.get(key.model.as_str(), key.serial.as_str()) {
            Some(id) => self.custody_of(id),
            None => Custody::NeverReported,
        }
    }

    fn evaluate_clock(
        &mut self,
        lines: &dyn LineSource,
        now: i64,
        by: Option<SnapshotRef>,
        out: &mut Vec<AlertChange>,
    ) {
        // Transfers whose grace period has ended.
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.evaluate_key(id, lines, now, By::clock(by), out);
        }
        // Cadences.
        for i in 0..self.states.len() {
            let code = self.states[i].code;
            let key = AlertKey {
                kind: AlertKind::SnapshotOverdue,
                item: None,
                state: Some(code),
                counterparty: None,
                sequence: None,
            };
            let body = match (self.config.cadence_ms.get(&code), self.states[i].latest) {
                (Some(&cadence), Some(latest))
                    if now > latest.as_of_unix_ms.saturating_add(cadence) =>
                {
                    Some(AlertBody {
                        severity: AlertKind::SnapshotOverdue.severity(),
                        spellings: Vec::new(),
                        states: vec![code],
                        summary: format!(
                            "{code} has not submitted since sequence {} (as of {} ms); expected every {} ms",
                            latest.sequence, latest.as_of_unix_ms, cadence
                        ),
                        evidence: vec![Evidence {
                            snapshot: latest,
                            role: ROLE_LATEST.into(),
                            lines: Vec::new(),
                        }],
                        custody: None,
                        seizures: Vec::new(),
                    })
                }
                _ => None,
            };
            self.set_alert(None, key, body, By::clock(by), out);
        }
    }

    /// The states whose latest snapshot holds the key, by state code (so
    /// evidence and text do not depend on the order states first appeared).
    fn holders(&self, id: KeyId) -> Vec<StateIdx> {
        let mut h: Vec<StateIdx> = (0..self.states.len() as StateIdx)
            .filter(|&s| self.states[s as usize].cell(id) & HELD != 0)
            .collect();
        h.sort_by_key(|&s| self.states[s as usize].code);
        h
    }

    /// The statuses of the state's most recent mention of the key, and the
    /// snapshot of that mention.
    fn last_seen(&self, id: KeyId, s: StateIdx) -> Option<(SnapshotRef, Cell)> {
        let slot = &self.states[s as usize];
        let cell = slot.cell(id);
        if cell != 0 {
            return slot.latest.map(|l| (l, cell));
        }
        if self.hint(id) & HINT_MENTION == 0 {
            return None;
        }
        self.last_mention
            .get(&(id, s))
            .map(|m| (m.listed_in, m.cell))
    }

    /// The state's last snapshot that held the key (its latest, if that
    /// holds it), with the first later snapshot that did not.
    fn last_holding(&self, id: KeyId, s: StateIdx) -> Option<(SnapshotRef, Option<SnapshotRef>)> {
        let slot = &self.states[s as usize];
        if slot.cell(id) & HELD != 0 {
            return slot.latest.map(|l| (l, None));
        }
        if self.hint(id) & HINT_LAST_HELD == 0 {
            return None;
        }
        self.last_held
            .get(&(id, s))
            .map(|h| (h.held_in, Some(h.gone_in)))
    }

    /// The custody rule of docs/alerts.md: the newest holding snapshot by
    /// as-of time across all states wins (within a state, the higher
    /// sequence); ties make several custodians. Never held: the newest
    /// listing instead.
    fn custody_of(&self, id: KeyId) -> Custody {
        let n = self.states.len() as StateIdx;
        let code = |s: StateIdx| self.states[s as usize].code;
        let newest = |candidates: Vec<(StateIdx, i64)>| -> Vec<StateIdx> {
            let Some(top) = candidates.iter().map(|&(_, t)| t).max() else {
                return Vec::new();
            };
            let mut winners: Vec<StateIdx> = candidates
                .into_iter()
                .filter(|&(_, t)| t == top)
                .map(|(s, _)| s)
                .collect();
            winners.sort_by_key(|&s| code(s));
            winners
        };
        let mut custodians = newest(
            (0..n)
                .filter_map(|s| self.last_holding(id, s).map(|(r, _)| (s, r.as_of_unix_ms)))
                .collect(),
        );
        if custodians.is_empty() {
            custodians = newest(
                (0..n)
                    .filter_map(|s| self.last_seen(id, s).map(|(r, _)| (s, r.as_of_unix_ms)))
                    .collect(),
            );
        }
        let Some(&first) = custodians.first() else {
            return Custody::NeverReported;
        };
        let Some((last_listed_in, cell)) = self.last_seen(id, first) else {
            return Custody::NeverReported;
        };
        let slot = &self.states[first as usize];
        let listed_now = slot.cell(id) != 0;
        let absent_since = if listed_now {
            None
        } else {
            self.last_mention.get(&(id, first)).map(|m| m.absent_in)
        };
        let holding = self.last_holding(id, first);
        let declared_to = if cell & bit(Status::TransferredOut) == 0 {
            Vec::new()
        } else if listed_now {
            slot.declared.get(&id).cloned().unwrap_or_default()
        } else {
            self.transfers
                .get(&(id, first))
                .map(|records| records.iter().map(|t| t.to).collect())
                .unwrap_or_default()
        };
        Custody::Known {
            custodians: custodians.iter().map(|&s| code(s)).collect(),
            last_custodian: code(first),
            last_status: statuses(cell),
            last_listed_in,
            last_held_in: holding.map(|(r, _)| r),
            gone_in: holding.and_then(|(_, gone)| gone),
            absent_since,
            declared_to,
            held_now_by: self.holders(id).into_iter().map(code).collect(),
        }
    }

    /// Recomputes every alert of one item key and records the differences.
    fn evaluate_key(
        &mut self,
        id: KeyId,
        lines: &dyn LineSource,
        now: i64,
        by: By,
        out: &mut Vec<AlertChange>,
    ) {
        // Received transfers end here: the receiving state holds the key.
        let n = if self.hint(id) & HINT_TRANSFER != 0 {
            self.states.len() as StateIdx
        } else {
            0
        };
        for s in 0..n {
            if let Some(records) = self.transfers.get_mut(&(id, s)) {
                let states = &self.states;
                let index = &self.state_index;
                let received = |t: &Transfer| {
                    index
                        .get(&t.to)
                        .is_some_and(|&r| states[r as usize].cell(id) & HELD != 0)
                };
                records.retain(|t| !received(t));
                if records.is_empty() {
                    self.transfers.remove(&(id, s));
                }
            }
        }

        let desired = self.desired_for_key(id, now);
        let existing: Vec<AlertKey> = self.open_by_key.get(&id).cloned().unwrap_or_default();
        if desired.is_empty() && existing.is_empty() {
            return;
        }
        let item = self.keys.item_key(id);
        let mut seen = Vec::with_capacity(desired.len());
        for d in desired {
            let key = AlertKey {
                kind: d.kind,
                item: Some(item.clone()),
                state: d.state.map(|s| self.states[s as usize].code),
                counterparty: d.counterparty,
                sequence: None,
            };
            let body = self.body(id, &item, &d, lines);
            seen.push(key.clone());
            self.set_alert(Some(id), key, Some(body), by, out);
        }
        for key in existing {
            if !seen.contains(&key) {
                self.set_alert(Some(id), key, None, by, out);
            }
        }
    }

    /// Opens, updates or clears one alert so that it matches `body`.
    fn set_alert(
        &mut self,
        id: Option<KeyId>,
        key: AlertKey,
        body: Option<AlertBody>,
        by: By,
        out: &mut Vec<AlertChange>,
    ) {
        match (self.open.get(&key), body) {
            (None, None) => {}
            (Some(old), Some(body)) if *old == body => {}
            (Some(_), Some(body)) => {
                self.open.insert(key.clone(), body.clone());
                out.push(AlertChange::Updated {
                    key,
                    body,
                    by: by.opened,
                });
            }
            (None, Some(body)) => {
                if let Some(id) = id {
                    self.open_by_key.entry(id).or_default().push(key.clone());
                }
                self.open.insert(key.clone(), body.clone());
                out.push(AlertChange::Opened {
                    key,
                    body,
                    by: by.opened,
                });
            }
            (Some(_), None) => {
                self.open.remove(&key);
                if let Some(id) = id
                    && let Some(list) = self.open_by_key.get_mut(&id)
                {
                    list.retain(|k| *k != key);
                    if list.is_empty() {
                        self.open_by_key.remove(&id);
                    }
                }
                out.push(AlertChange::Cleared {
                    key,
                    by: by.cleared,
                });
            }
        }
    }

    /// The conditions that hold for a key now (cheap: no evidence yet).
    fn desired_for_key(&self, id: KeyId, now: i64) -> Vec<Desired> {
        let mut out = Vec::new();
        // Bit s set: state s holds the key. Allocation-free: this runs for
        // every key of a first snapshot.
        let holders = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.cell(id) & HELD != 0)
            .fold(0u128, |mask, (s, _)| mask | (1 << s));
        let n = self.states.len() as StateIdx;
        for s in 0..n {
            if self.states[s as usize].cell(id) & DUP != 0 {
                out.push(Desired::new(AlertKind::DuplicateInSnapshot, Some(s)));
            }
        }
        if holders.count_ones() >= 2 {
            out.push(Desired::new(AlertKind::HeldBySeveralStates, None));
        }
        let hint = self.hint(id);
        for s in 0..n {
            if hint & HINT_VANISHED != 0 && self.vanished.contains_key(&(id, s)) {
                let kind = if holders == 0 {
                    AlertKind::UnaccountedDisappearance
                } else {
                    AlertKind::UndeclaredTransfer
                };
                out.push(Desired::new(kind, Some(s)));
            }
            if let Some(records) = (hint & HINT_TRANSFER != 0)
                .then(|| self.transfers.get(&(id, s)))
                .flatten()
            {
                for t in records {
                    if now
                        >= t.declared_in
                            .as_of_unix_ms
                            .saturating_add(self.config.transfer_grace_ms)
                    {
                        let mut d = Desired::new(AlertKind::TransferNotReceived, Some(s));
                        d.counterparty = Some(t.to);
                        out.push(d);
                    }
                }
            }
            if self.last_seen(id, s).is_some_and(|(_, c)| c & LOST != 0) {
                out.push(Desired::new(AlertKind::ReportedLost, Some(s)));
            }
        }
        if holders != 0 && self.disposals.contains_key(&id) {
            out.push(Desired::new(AlertKind::DisposedItemReappears, None));
        }
        if self.seizures.contains_key(&id) {
            out.push(Desired::new(AlertKind::SeizedItem, None));
        }
        out
    }

    /// Evidence from one snapshot; its lines are filled by [`attach_lines`]
    /// once the body is complete.
    fn evidence(&self, snapshot: SnapshotRef, role: &str) -> Evidence {
        Evidence {
            snapshot,
            role: role.to_string(),
            lines: Vec::new(),
        }
    }

    /// The headline of a seized item's alert, and the evidence behind it:
    /// each custodian's last holding row, the custodian's later rows, every
    /// disposal declaration, and every state's last holding row dated after
    /// the seizure (the strongest signal: a seized item still on the books).
    fn seized_body(
        &self,
        id: KeyId,
        item: &ItemKey,
        trail: &Custody,
        seizures: &[Seizure],
        evidence: &mut Vec<Evidence>,
    ) -> String {
        let Custody::Known {
            custodians,
            last_custodian,
            last_status,
            last_listed_in,
            last_held_in,
            absent_since,
            declared_to,
            held_now_by,
            ..
        } = trail
        else {
            return format!("{item} was seized; no member ever reported it");
        };
        let mut push = |snapshot: SnapshotRef, role: &str| {
            if !evidence
                .iter()
                .any(|e| e.snapshot == snapshot && e.role == role)
            {
                evidence.push(self.evidence(snapshot, role));
            }
        };
        let index = |code: &StateCode| self.state_index.get(code).copied();
        let at = |r: &SnapshotRef| format!("{} #{}", r.state, r.sequence);
        let mut parts: Vec<String> = Vec::new();

        // Disposals declared by other states (the custodian's own declaration
        // is told below, as what became of the item).
        if let Some(list) = self.disposals.get(&id) {
            for (r, cell) in list {
                let what = join_statuses(*cell);
                push(*r, &format!("declared {what}"));
                if !custodians.contains(&r.state) {
                    parts.push(format!("declared {what} by {}", at(r)));
                }
            }
        }

        let status = join_statuses(statuses_cell(last_status));
        let held_by = |r: &SnapshotRef| format!("held by {}", at(r));
        match last_held_in {
            None => parts.push(format!(
                "never listed as held by any member; last listed by {} as {status}",
                at(last_listed_in)
            )),
            Some(held) => {
                for s in custodians.iter().filter_map(index) {
                    if let Some((r, _)) = self.last_holding(id, s) {
                        push(r, "last held");
                    }
                }
                let others: Vec<String> = custodians
                    .iter()
                    .filter(|c| *c != last_custodian)
                    .filter_map(index)
                    .filter_map(|s| self.last_holding(id, s))
                    .map(|(r, _)| at(&r))
                    .collect();
                let also = if others.is_empty() {
                    String::new()
                } else {
                    format!(" and {}", others.join(", "))
                };
                let still_holds = last_status.iter().any(|s| s.is_held());
                if still_holds && absent_since.is_none() {
                    parts.push(format!("{}{also} ({status})", held_by(held)));
                } else if let Some(absent) = absent_since.filter(|_| still_holds) {
                    push(absent, ROLE_ABSENT);
                    parts.push(format!(
                        "last {}{also} ({status}), dropped from {last_custodian}'s books without a declaration in #{}",
                        held_by(held),
                        absent.sequence
                    ));
                } else {
                    push(*last_listed_in, &format!("declared {status}"));
                    let then = if last_status.contains(&Status::TransferredOut) {
                        let to: Vec<StateCode> = declared_to.clone();
                        let received = to.iter().any(|t| held_now_by.contains(t));
                        match (to.is_empty(), received) {
                            (true, _) => {
                                format!("declared transferred out in #{}", last_listed_in.sequence)
                            }
                            (false, true) => format!(
                                "declared transferred to {} in #{}",
                                join(&to),
                                last_listed_in.sequence
                            ),
                            (false, false) => format!(
                                "declared transferred to {} in #{} and never received",
                                join(&to),
                                last_listed_in.sequence
                            ),
                        }
                    } else if last_status.contains(&Status::Lost) {
                        format!("reported lost in #{}", last_listed_in.sequence)
                    } else {
                        format!("declared {status} in #{}", last_listed_in.sequence)
                    };
                    parts.push(format!("last {}{also}, {then}", held_by(held)));
                    if let Some(absent) = absent_since {
                        push(*absent, ROLE_ABSENT);
                    }
                }
            }
        }

        let others_hold: Vec<StateCode> = held_now_by
            .iter()
            .filter(|h| !custodians.contains(h))
            .copied()
            .collect();
        for s in others_hold.iter().filter_map(index) {
            if let Some(l) = self.states[s as usize].latest {
                push(l, "holds");
            }
        }
        if !others_hold.is_empty() {
            parts.push(format!("now held by {}", join(&others_hold)));
        }

        // Listed as held after the (first) seizure.
        if let Some(seized_at) = seizures.iter().map(|z| z.seized_at_unix_ms).min() {
            let mut after: Vec<StateCode> = Vec::new();
            for s in 0..self.states.len() as StateIdx {
                if let Some((r, _)) = self.last_holding(id, s)
                    && r.as_of_unix_ms > seized_at
                {
                    push(r, ROLE_HELD_AFTER_SEIZURE);
                    after.push(r.state);
                }
            }
            after.sort();
            if !after.is_empty() {
                parts.push(format!(
                    "listed as held after it was seized by {}",
                    join(&after)
                ));
            }
        }
        format!("{item} was seized; {}", parts.join("; "))
    }

    /// Builds the full alert text and evidence for one condition.
    fn body(&self, id: KeyId, item: &ItemKey, d: &Desired, lines: &dyn LineSource) -> AlertBody {
        let code = |s: StateIdx| self.states[s as usize].code;
        let latest = |s: StateIdx| self.states[s as usize].latest;
        let holders = self.holders(id);
        let holder_codes: Vec<StateCode> = holders.iter().map(|&h| code(h)).collect();
        let holds = |evidence: &mut Vec<Evidence>| {
            for &h in &holders {
                if let Some(l) = latest(h) {
                    evidence.push(self.evidence(l, "holds"));
                }
            }
        };
        let mut evidence = Vec::new();
        let mut states: Vec<StateCode> = d.state.map(code).into_iter().collect();
        let mut custody = None;
        let mut seizures = Vec::new();
        let summary = match d.kind {
            AlertKind::DuplicateInSnapshot => {
                let s = d.state.unwrap_or_default();
                if let Some(l) = latest(s) {
                    evidence.push(self.evidence(l, "lists the key more than once"));
                }
                format!("{} lists {item} more than once in one snapshot", code(s))
            }
            AlertKind::HeldBySeveralStates => {
                holds(&mut evidence);
                states.extend(holder_codes.iter().copied());
                format!("{item} is held by {}", join(&holder_codes))
            }
            AlertKind::UnaccountedDisappearance | AlertKind::UndeclaredTransfer => {
                let s = d.state.unwrap_or_default();
                if let Some(v) = self.vanished.get(&(id, s)) {
                    evidence.push(self.evidence(v.last_held, "last held"));
                    evidence.push(Evidence {
                        snapshot: v.absent_in,
                        role: ROLE_ABSENT.into(),
                        lines: Vec::new(),
                    });
                }
                if d.kind == AlertKind::UndeclaredTransfer {
                    holds(&mut evidence);
                    states.extend(holder_codes.iter().copied());
                    format!(
                        "{item} left {}'s books without a declaration and is now held by {}",
                        code(s),
                        join(&holder_codes)
                    )
                } else {
                    format!(
                        "{item} left {}'s books without a declaration and no member holds it",
                        code(s)
                    )
                }
            }
            AlertKind::TransferNotReceived => {
                let s = d.state.unwrap_or_default();
                let to = d.counterparty;
                if let Some(t) = self
                    .transfers
                    .get(&(id, s))
                    .and_then(|r| r.iter().find(|t| Some(t.to) == to))
                {
                    evidence.push(self.evidence(t.declared_in, "declared transferred_out"));
                }
                if let Some(to) = to {
                    states.push(to);
                    if let Some(l) = self.state_index.get(&to).and_then(|&r| latest(r)) {
                        evidence.push(Evidence {
                            snapshot: l,
                            role: ROLE_NOT_RECEIVED.into(),
                            lines: Vec::new(),
                        });
                    }
                }
                format!(
                    "{} declared {item} transferred to {} but it has not arrived",
                    code(s),
                    to.map_or_else(|| "?".to_string(), |t| t.to_string())
                )
            }
            AlertKind::DisposedItemReappears => {
                if let Some(list) = self.disposals.get(&id) {
                    for (r, cell) in list {
                        let role = format!("declared {}", join_statuses(*cell));
                        evidence.push(self.evidence(*r, &role));
                        states.push(r.state);
                    }
                }
                holds(&mut evidence);
                states.extend(holder_codes.iter().copied());
                format!(
                    "{item} was declared destroyed or expended and is held again by {}",
                    join(&holder_codes)
                )
            }
            AlertKind::ReportedLost => {
                let s = d.state.unwrap_or_default();
                if let Some((r, _)) = self.last_seen(id, s) {
                    evidence.push(self.evidence(r, "declared lost"));
                }
                format!("{} reports {item} lost", code(s))
            }
            AlertKind::SeizedItem => {
                seizures = self.seizures.get(&id).cloned().unwrap_or_default();
                let trail = self.custody_of(id);
                let summary = self.seized_body(id, item, &trail, &seizures, &mut evidence);
                if let Custody::Known {
                    custodians,
                    held_now_by,
                    ..
                } = &trail
                {
                    states.extend(custodians.iter().copied());
                    states.extend(held_now_by.iter().copied());
                }
                states.extend(evidence.iter().map(|e| e.snapshot.state));
                custody = Some(Box::new(trail));
                summary
            }
            AlertKind::ConflictingSubmission | AlertKind::SnapshotOverdue => String::new(),
        };
        states.sort();
        states.dedup();
        let mut body = AlertBody {
            severity: d.kind.severity(),
            spellings: Vec::new(),
            states,
            summary,
            evidence,
            custody,
            seizures,
        };
        attach_lines(&mut body, item, lines);
        body
    }
}

/// Evidence roles that stand for a snapshot alone (what it does *not* list,
/// or that it is the latest): they never carry item lines.
const ROLE_ABSENT: &str = "absent without a declaration";
const ROLE_NOT_RECEIVED: &str = "receiving state's latest snapshot does not hold it";
const ROLE_LATEST: &str = "latest snapshot";
/// A holding row dated after the item was seized.
const ROLE_HELD_AFTER_SEIZURE: &str = "listed as held after it was seized";

/// Fills the item lines of an item alert's evidence from `lines`, and its
/// spellings (every raw serial in the lines and the seizure reports).
///
/// The engine builds every body this way, and the lines of a key in an
/// accepted snapshot never change; so a body built with [`super::NoLines`]
/// and given to `attach_lines` later equals the body built with `lines` in
/// the first place. The coordinator relies on this to read evidence only for
/// the alerts that actually changed; and `attach_lines(body, item, &NoLines)`
/// strips a body back to what the engine keeps.
pub fn attach_lines(body: &mut AlertBody, item: &ItemKey, lines: &dyn LineSource) {
    for e in &mut body.evidence {
        if ![ROLE_ABSENT, ROLE_NOT_RECEIVED, ROLE_LATEST].contains(&e.role.as_str()) {
            e.lines = lines.lines(&e.snapshot, item);
        }
    }
    let mut spellings: Vec<String> = body
        .evidence
        .iter()
        .flat_map(|e| e.lines.iter().map(|l| l.serial.clone()))
        .chain(body.seizures.iter().map(|s| s.serial.clone()))
        .collect();
    spellings.sort();
    spellings.dedup();
    body.spellings = spellings;
}

/// The snapshot an evaluation names in the changes it makes: the one that
/// caused an opening or an update, and the one that removed a cause. The
/// clock causes what it opens (no snapshot), but a snapshot applied with it
/// may still be what clears a condition (an overdue state's own snapshot).
#[derive(Debug, Clone, Copy)]
struct By {
    opened: Option<SnapshotRef>,
    cleared: Option<SnapshotRef>,
}

impl By {
    const NOTHING: By = By {
        opened: None,
        cleared: None,
    };

    fn snapshot(snapshot: SnapshotRef) -> By {
        By {
            opened: Some(snapshot),
            cleared: Some(snapshot),
        }
    }

    fn clock(applied: Option<SnapshotRef>) -> By {
        By {
            opened: None,
            cleared: applied,
        }
    }
}

/// A condition found for a key, before its evidence is gathered.
struct Desired {
    kind: AlertKind,
    state: Option<StateIdx>,
    counterparty: Option<StateCode>,
}

impl Desired {
    fn new(kind: AlertKind, state: Option<StateIdx>) -> Desired {
        Desired {
            kind,
            state,
            counterparty: None,
        }
    }
}

fn join(codes: &[StateCode]) -> String {
    codes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn statuses_cell(list: &[Status]) -> Cell {
    list.iter().fold(0, |c, s| c | bit(*s))
}

fn join_statuses(cell: Cell) -> String {
    statuses(cell & STATUS_BITS)
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}
