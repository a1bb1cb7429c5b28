//! An independent oracle for the reconciliation engine (`crates/tally-core/src/reconcile`).
//!
//! The oracle is deliberately naive: given the whole history of events applied
//! so far (every snapshot of every state in acceptance order, equivocations,
//! seizures, clock ticks) it recomputes the set of open alert keys directly
//! from the rules in the module documentation of `crates/tally-core/src/reconcile/mod.rs`, with
//! plain loops over the history and no incremental bookkeeping. Property tests
//! then drive the real engine and the oracle with the same random event
//! sequences and compare after every event.
//!
//! # How the oracle reads the specification
//! Where the module documentation leaves room, the oracle reads it as follows
//! (each point is marked `[Ix]` at the code that implements it):
//! - [I1] A state "holds" a key in a snapshot if at least one of the rows for
//!   the key is `in_service` or `in_storage` (duplicate rows may disagree).
//! - [I2] "vanished": the state's snapshot n−1 holds the key and snapshot n
//!   has no row for it. A state's first snapshot has no previous one, so it
//!   never creates a vanished record. A key that went held → `lost`
//!   (or `transferred_out`, disposed) → absent leaves no vanished record.
//! - [I3] A transfer record (key, from, to) is created by a snapshot of
//!   `from` that has a `transferred_out`-to-`to` row for the key while the
//!   snapshot before it (if any) had none, unless the record still exists
//!   (the module doc: "while a record exists, repeating the declaration does
//!   not create a new one"). So a declaration dropped and then repeated, with
//!   no withdrawal or receipt in between, keeps the grace period of the first
//!   declaration; after a withdrawal or receipt a new declaration starts a
//!   new one.
//! - [I4] Withdrawal: a later snapshot of `from` lists the key but has no
//!   `transferred_out`-to-`to` row for it. A snapshot that lists the key
//!   twice, `transferred_out` to B and to C, declares both transfers and
//!   withdraws neither.
//! - [I5] Receipt: the record is removed as soon as `to`'s latest snapshot
//!   holds the key, *including at the moment the record is created* (if `to`
//!   already holds the key when `from` declares the transfer, the record is
//!   received at once; if `to` later drops the key, no
//!   `transfer_not_received` opens).
//! - [I6] A self-transfer (counterparty = own state) is valid input (the
//!   export format allows it) and follows the same rules: it is received iff
//!   the state's own latest snapshot holds the key.
//! - [I7] `disposed_item_reappears` opens whenever any snapshot ever declared
//!   the key disposed and some latest snapshot holds it, whatever the order:
//!   also when the holder held it before the disposal was declared, and when
//!   the disposal and the held row are duplicate rows of one snapshot.
//! - [I8] `reported_lost`: the most recent snapshot of the state that lists
//!   the key has at least one `lost` row for it (other rows may disagree). It
//!   stays open when later snapshots drop the row.
//! - [I9] Time: the engine's "now" is the `now_unix_ms` of the most recent
//!   call that passed one (`apply_snapshot`, `apply_seizure`, `tick`); the open
//!   set after *any* call is the rule table evaluated at that now, so a
//!   snapshot or a seizure also opens time-based alerts of other keys and
//!   states that have fallen due. `apply_equivocation` keeps the previous now.
//!   Before the first call with a now, time-based rules do not fire.
//! - [I10] `snapshot_overdue` never opens for a state without any snapshot
//!   (the module doc: "shown by the coordinator status instead"). Overdue is
//!   strict (`now > as_of + cadence`); the grace rule is not
//!   (`now ≥ as_of + grace`).
//! - [I11] Alert keys carry exactly the fields in brackets in the rule table,
//!   the rest `None`: `held_by_several_states`, `disposed_item_reappears` and
//!   `seized_item` have no state; `transfer_not_received` has the declaring
//!   state as `state` and the receiver as `counterparty`;
//!   `conflicting_submission` has no item.
//! - [I12] Clearing: with a clock that never goes back nothing is cleared by
//!   time, so every `Cleared` comes from `apply_snapshot` and names that
//!   snapshot (`by`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tally::item::{Item, Status};
use tally::reconcile::{
    AlertChange, AlertKey, AlertKind, Custody, Engine, EngineConfig, EquivocationRef, ItemView,
    NoLines, Seizure, SnapshotRef,
};
use tally::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};
use tally::snapshot::{SnapshotDigest, encode_leaf};
use tally::state::{MEMBER_STATES, StateCode};

// ---------------------------------------------------------------------------
// The universe: a few keys, many spellings of each.

const MODELS: [&str; 2] = ["9K38", "9M39"];
const SERIALS: [&str; 6] = ["KA012", "KA013", "MX7", "EH55", "TO31", "BC200"];
/// Keys `0..UNIVERSE` are listed by states; key `UNIVERSE` only ever appears
/// in seizure reports.
const UNIVERSE: usize = MODELS.len() * SERIALS.len();
const SITES: [&str; 3] = ["", "depot 12", "Склад-7"];
const T0: i64 = 1_700_000_000_000;

/// An item key in canonical form: (model, serial).
type Key = (String, String);

fn universe_key(i: usize) -> Key {
    if i >= UNIVERSE {
        return ("9K38".to_string(), "ZZ999".to_string());
    }
    (
        MODELS[i / SERIALS.len()].to_string(),
        SERIALS[i % SERIALS.len()].to_string(),
    )
}

fn item_key(k: &Key) -> ItemKey {
    let rule = CanonicalRule::default();
    ItemKey {
        model: CanonicalModel::from_canonical(&k.0, &rule).expect("canonical model"),
        serial: CanonicalSerial::from_canonical(&k.1, &rule).expect("canonical serial"),
    }
}

fn state(i: usize) -> StateCode {
    StateCode::parse(MEMBER_STATES[i % MEMBER_STATES.len()]).expect("member state")
}

fn code(s: &str) -> StateCode {
    StateCode::parse(s).expect("state code")
}

/// Cyrillic look-alikes of the Latin capitals used in the universe.
fn cyrillic(c: char, upper: bool) -> char {
    let (u, l) = match c {
        'A' => ('\u{0410}', '\u{0430}'),
        'B' => ('\u{0412}', '\u{0432}'),
        'C' => ('\u{0421}', '\u{0441}'),
        'E' => ('\u{0415}', '\u{0435}'),
        'H' => ('\u{041D}', '\u{043D}'),
        'K' => ('\u{041A}', '\u{043A}'),
        'M' => ('\u{041C}', '\u{043C}'),
        'O' => ('\u{041E}', '\u{043E}'),
        'T' => ('\u{0422}', '\u{0442}'),
        'X' => ('\u{0425}', '\u{0445}'),
        _ => return c,
    };
    if upper { u } else { l }
}

/// A raw spelling of a canonical code: variant 0 is the canonical form itself.
fn spell(canonical: &str, variant: u8) -> String {
    match variant % 6 {
        0 => canonical.to_string(),
        1 => canonical.to_lowercase(),
        2 => {
            let mut c = canonical.chars();
            let first = c.next().map(String::from).unwrap_or_default();
            format!("{first}-{}", c.as_str())
        }
        3 => canonical.chars().map(|c| cyrillic(c, false)).collect(),
        4 => {
            let (a, b) = canonical.split_at(canonical.len() / 2);
            format!(" {a} {b}\t")
        }
        _ => canonical.chars().map(|c| cyrillic(c, true)).collect(),
    }
}

// ---------------------------------------------------------------------------
// Events.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    key: Key,
    raw_model: String,
    raw_serial: String,
    status: Status,
    site: String,
    counterparty: Option<StateCode>,
}

impl Row {
    fn new(k: usize, status: Status, counterparty: Option<StateCode>, spelling: u8) -> Row {
        let key = universe_key(k);
        Row {
            raw_model: spell(&key.0, spelling),
            raw_serial: spell(&key.1, spelling / 6),
            site: SITES[usize::from(spelling) % SITES.len()].to_string(),
            key,
            status,
            counterparty: if status == Status::TransferredOut {
                counterparty.or(Some(state(0)))
            } else {
                None
            },
        }
    }

    fn view(&self) -> ItemView<'_> {
        ItemView {
            canonical_model: &self.key.0,
            canonical_serial: &self.key.1,
            model: &self.raw_model,
            serial: &self.raw_serial,
            status: self.status,
            site: &self.site,
            counterparty: self.counterparty,
        }
    }

    /// The position of the row in the defined snapshot order.
    fn order(&self) -> (Key, Vec<u8>) {
        let item = Item {
            key: item_key(&self.key),
            model: self.raw_model.clone(),
            serial: self.raw_serial.clone(),
            status: self.status,
            site: self.site.clone(),
            counterparty: self.counterparty,
        };
        let mut leaf = Vec::new();
        encode_leaf(&item, &mut leaf);
        (self.key.clone(), leaf)
    }
}

#[derive(Clone, Debug)]
struct Snap {
    r: SnapshotRef,
    rows: Vec<Row>,
}

impl Snap {
    fn rows_of<'a>(&'a self, k: &'a Key) -> impl Iterator<Item = &'a Row> + 'a {
        self.rows.iter().filter(move |r| &r.key == k)
    }
    fn lists(&self, k: &Key) -> bool {
        self.rows_of(k).next().is_some()
    }
    /// [I1] at least one held row.
    fn holds(&self, k: &Key) -> bool {
        self.rows_of(k).any(|r| r.status.is_held())
    }
    fn declares(&self, k: &Key, to: StateCode) -> bool {
        self.rows_of(k)
            .any(|r| r.status == Status::TransferredOut && r.counterparty == Some(to))
    }
}

#[derive(Clone, Debug)]
enum Event {
    Snapshot {
        snap: Snap,
        now: i64,
        /// Same rows as the state's previous snapshot, same now: must open nothing.
        repeat: bool,
    },
    Equivocation(EquivocationRef),
    Seizure {
        seizure: Seizure,
        now: i64,
    },
    Tick {
        now: i64,
    },
}

impl Event {
    fn now(&self) -> Option<i64> {
        match self {
            Event::Snapshot { now, .. } | Event::Seizure { now, .. } | Event::Tick { now } => {
                Some(*now)
            }
            Event::Equivocation(_) => None,
        }
    }
}

fn t(ms: i64) -> String {
    format!("T0{:+}", ms - T0)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Snapshot { snap, now, repeat } => {
                write!(
                    f,
                    "now={} snapshot {} #{} as_of={}{}:",
                    t(*now),
                    snap.r.state,
                    snap.r.sequence,
                    t(snap.r.as_of_unix_ms),
                    if *repeat { " (repeat)" } else { "" }
                )?;
                if snap.rows.is_empty() {
                    write!(f, " (no rows)")?;
                }
                for r in &snap.rows {
                    write!(f, "\n      {}/{} {}", r.key.0, r.key.1, r.status)?;
                    if let Some(c) = r.counterparty {
                        write!(f, "->{c}")?;
                    }
                    write!(f, "  (raw {:?}/{:?})", r.raw_model, r.raw_serial)?;
                }
                Ok(())
            }
            Event::Equivocation(e) => write!(f, "equivocation {} #{}", e.state, e.sequence),
            Event::Seizure { seizure, now } => {
                write!(f, "now={} seizure {}", t(*now), seizure.key)
            }
            Event::Tick { now } => write!(f, "now={} tick", t(*now)),
        }
    }
}

#[derive(Clone, Debug)]
struct Setup {
    grace: i64,
    cadence: BTreeMap<StateCode, i64>,
}

impl Setup {
    fn config(&self) -> EngineConfig {
        EngineConfig {
            transfer_grace_ms: self.grace,
            cadence_ms: self.cadence.clone(),
        }
    }
}

fn describe(setup: &Setup, events: &[Event]) -> String {
    let mut s = format!("grace={}ms cadence(ms)={{", setup.grace);
    for (i, (st, c)) in setup.cadence.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(s, "{sep}{st}: {c}");
    }
    s.push_str("}\n");
    for (i, e) in events.iter().enumerate() {
        let _ = writeln!(s, "  #{i} {e}");
    }
    s
}

fn fake_digest(st: StateCode, sequence: u64, salt: u8) -> SnapshotDigest {
    let mut d = [0u8; 32];
    d[..3].copy_from_slice(st.as_bytes());
    d[3..11].copy_from_slice(&sequence.to_be_bytes());
    d[11] = salt;
    SnapshotDigest(d)
}

/// Builds well-formed event sequences: consecutive sequence numbers per
/// state, `as_of` non-decreasing per state and never after `now`, a clock
/// that never goes back, rows in the defined snapshot order.
struct Builder {
    now: i64,
    seq: BTreeMap<StateCode, u64>,
    last_as_of: BTreeMap<StateCode, i64>,
    events: Vec<Event>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            now: T0,
            seq: BTreeMap::new(),
            last_as_of: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// A snapshot taken `lag` ms before now (but not before the state's previous one).
    fn snapshot(&mut self, st: StateCode, lag: i64, mut rows: Vec<Row>, repeat: bool) {
        rows.sort_by_cached_key(Row::order);
        let sequence = self.seq.get(&st).copied().unwrap_or(0) + 1;
        self.seq.insert(st, sequence);
        let prev_as_of = self.last_as_of.get(&st).copied().unwrap_or(i64::MIN);
        let as_of = (self.now - lag).max(prev_as_of).min(self.now);
        self.last_as_of.insert(st, as_of);
        let r = SnapshotRef {
            state: st,
            sequence,
            digest: fake_digest(st, sequence, 0),
            as_of_unix_ms: as_of,
        };
        self.events.push(Event::Snapshot {
            snap: Snap { r, rows },
            now: self.now,
            repeat,
        });
    }

    fn equivocate(&mut self, st: StateCode, sequence: u64) {
        self.events.push(Event::Equivocation(EquivocationRef {
            state: st,
            sequence,
            submitted: fake_digest(st, sequence, 1),
            conflicts_with: fake_digest(st, sequence, 0),
        }));
    }

    fn seize(&mut self, k: usize, spelling: u8) {
        let key = universe_key(k);
        self.events.push(Event::Seizure {
            seizure: Seizure {
                key: item_key(&key),
                model: spell(&key.0, spelling),
                serial: spell(&key.1, spelling / 6),
                seized_at_unix_ms: self.now,
                place: "checkpoint".to_string(),
                note: String::new(),
            },
            now: self.now,
        });
    }

    fn tick(&mut self, dt: i64) {
        self.now += dt;
        self.events.push(Event::Tick { now: self.now });
    }
}

// ---------------------------------------------------------------------------
// The oracle.

fn alert(
    kind: AlertKind,
    item: Option<&Key>,
    st: Option<StateCode>,
    counterparty: Option<StateCode>,
    sequence: Option<u64>,
) -> AlertKey {
    AlertKey {
        kind,
        item: item.map(item_key),
        state: st,
        counterparty,
        sequence,
    }
}

/// Every snapshot of `st` in `history`, in order, with its position in `history`.
fn snapshots_of(history: &[Event], st: StateCode) -> Vec<(usize, &Snap)> {
    history
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::Snapshot { snap, .. } if snap.r.state == st => Some((i, snap)),
            _ => None,
        })
        .collect()
}

fn states_seen(history: &[Event]) -> BTreeSet<StateCode> {
    history
        .iter()
        .filter_map(|e| match e {
            Event::Snapshot { snap, .. } => Some(snap.r.state),
            _ => None,
        })
        .collect()
}

/// The transfer records that exist after `history`: (key, from, to) with
/// the declaring snapshot. A record's life depends on how the snapshots of
/// `from` and `to` interleave, so this walks the history in order, once per
/// candidate (key, from, to), with nothing but the candidate's own record.
fn transfer_records(history: &[Event]) -> Vec<(Key, StateCode, StateCode, SnapshotRef)> {
    let mut candidates: BTreeSet<(Key, StateCode, StateCode)> = BTreeSet::new();
    for e in history {
        if let Event::Snapshot { snap, .. } = e {
            for r in &snap.rows {
                if let (Status::TransferredOut, Some(to)) = (r.status, r.counterparty) {
                    candidates.insert((r.key.clone(), snap.r.state, to));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (k, from, to) in candidates {
        let mut record: Option<SnapshotRef> = None;
        let mut previous_declared = false;
        let mut receiver_holds = false;
        for e in history {
            let Event::Snapshot { snap, .. } = e else {
                continue;
            };
            if snap.r.state == from {
                let declares = snap.declares(&k, to);
                // [I4] withdrawn: the key listed without this declaration.
                if snap.lists(&k) && !declares {
                    record = None;
                }
                // [I3] created by a new declaration, unless the record is still
                // there (dropped row, then repeated: same record, same grace).
                if declares && !previous_declared && record.is_none() {
                    record = Some(snap.r);
                }
                previous_declared = declares;
            }
            if snap.r.state == to {
                receiver_holds = snap.holds(&k);
            }
            // [I5] received whenever `to`'s latest holds the key, also at once.
            if receiver_holds {
                record = None;
            }
        }
        if let Some(declaring) = record {
            out.push((k, from, to, declaring));
        }
    }
    out
}

/// The alert keys that are open after `history`, straight from the rule table.
fn oracle(setup: &Setup, history: &[Event]) -> BTreeSet<AlertKey> {
    use AlertKind::*;
    // [I9] the now of the most recent call that passed one.
    let now = history.iter().rev().find_map(Event::now);
    let states = states_seen(history);
    let latest: BTreeMap<StateCode, &Snap> = states
        .iter()
        .map(|&s| (s, snapshots_of(history, s).last().expect("seen").1))
        .collect();
    let all_snaps: Vec<&Snap> = history
        .iter()
        .filter_map(|e| match e {
            Event::Snapshot { snap, .. } => Some(snap),
            _ => None,
        })
        .collect();
    let keys: BTreeSet<Key> = all_snaps
        .iter()
        .flat_map(|s| s.rows.iter().map(|r| r.key.clone()))
        .collect();
    let holders = |k: &Key| latest.values().filter(|s| s.holds(k)).count();

    let mut open = BTreeSet::new();
    for (&st, snap) in &latest {
        for k in &keys {
            // duplicate_in_snapshot: more than one row, whatever the statuses and spellings.
            if snap.rows_of(k).count() > 1 {
                open.insert(alert(DuplicateInSnapshot, Some(k), Some(st), None, None));
            }
        }
    }
    for k in &keys {
        if holders(k) >= 2 {
            open.insert(alert(HeldBySeveralStates, Some(k), None, None, None));
        }
    }
    for &st in &states {
        let own = snapshots_of(history, st);
        for k in &keys {
            let Some(j) = own.iter().rposition(|(_, s)| s.lists(k)) else {
                continue;
            };
            // [I2] the last snapshot listing the key held it and a later one exists:
            // the vanished record made by the snapshot after it is still there.
            if j + 1 < own.len() && own[j].1.holds(k) {
                let kind = if holders(k) == 0 {
                    UnaccountedDisappearance
                } else {
                    UndeclaredTransfer
                };
                open.insert(alert(kind, Some(k), Some(st), None, None));
            }
            // [I8] reported_lost: the most recent mention has a lost row.
            if own[j].1.rows_of(k).any(|r| r.status == Status::Lost) {
                open.insert(alert(ReportedLost, Some(k), Some(st), None, None));
            }
        }
    }
    if let Some(now) = now {
        for (k, from, to, declaring) in transfer_records(history) {
            let received = latest.get(&to).is_some_and(|s| s.holds(&k));
            if now >= declaring.as_of_unix_ms + setup.grace && !received {
                open.insert(alert(
                    TransferNotReceived,
                    Some(&k),
                    Some(from),
                    Some(to),
                    None,
                ));
            }
        }
    }
    for k in &keys {
        // [I7] disposed once, held now (anywhere, in any order).
        let disposed = all_snaps
            .iter()
            .any(|s| s.rows_of(k).any(|r| r.status.is_disposed()));
        if disposed && holders(k) > 0 {
            open.insert(alert(DisposedItemReappears, Some(k), None, None, None));
        }
    }
    for e in history {
        match e {
            Event::Seizure { seizure, .. } => {
                let k = (
                    seizure.key.model.as_str().to_string(),
                    seizure.key.serial.as_str().to_string(),
                );
                open.insert(alert(SeizedItem, Some(&k), None, None, None));
            }
            Event::Equivocation(q) => {
                open.insert(alert(
                    ConflictingSubmission,
                    None,
                    Some(q.state),
                    None,
                    Some(q.sequence),
                ));
            }
            _ => {}
        }
    }
    if let Some(now) = now {
        // [I10] overdue: only states that submitted.
        for (&st, &cadence) in &setup.cadence {
            if latest
                .get(&st)
                .is_some_and(|s| now > s.r.as_of_unix_ms + cadence)
            {
                open.insert(alert(SnapshotOverdue, None, Some(st), None, None));
            }
        }
    }
    open
}

// ---------------------------------------------------------------------------
// Driving the engine.

fn apply(engine: &mut Engine, event: &Event) -> Vec<AlertChange> {
    match event {
        Event::Snapshot { snap, now, .. } => {
            engine.apply_snapshot(snap.r, snap.rows.iter().map(Row::view), &NoLines, *now)
        }
        Event::Equivocation(q) => engine.apply_equivocation(q),
        Event::Seizure { seizure, now } => engine.apply_seizure(seizure.clone(), &NoLines, *now),
        Event::Tick { now } => engine.tick(&NoLines, *now),
    }
}

fn open_keys(engine: &Engine) -> BTreeSet<AlertKey> {
    engine.open_alerts().keys().cloned().collect()
}

fn list(keys: &BTreeSet<AlertKey>) -> String {
    if keys.is_empty() {
        return " (none)".to_string();
    }
    keys.iter().map(|k| format!("\n    {k}")).collect()
}

fn diff(engine: &BTreeSet<AlertKey>, oracle: &BTreeSet<AlertKey>) -> String {
    diff_labelled(("engine", engine), ("oracle", oracle))
}

fn diff_labelled(a: (&str, &BTreeSet<AlertKey>), b: (&str, &BTreeSet<AlertKey>)) -> String {
    let only_a: BTreeSet<AlertKey> = a.1.difference(b.1).cloned().collect();
    let only_b: BTreeSet<AlertKey> = b.1.difference(a.1).cloned().collect();
    format!(
        "  open in the {} only:{}\n  open in the {} only:{}",
        a.0,
        list(&only_a),
        b.0,
        list(&only_b)
    )
}

fn change_text(c: &AlertChange) -> String {
    match c {
        AlertChange::Opened { key, .. } => format!("Opened {key}"),
        AlertChange::Updated { key, .. } => format!("Updated {key}"),
        AlertChange::Cleared { key, by } => format!(
            "Cleared {key} by {}",
            by.map_or("-".to_string(), |r| format!("{} #{}", r.state, r.sequence))
        ),
    }
}

/// Applies `changes` to `open` as a watcher would, checking each against the
/// set it applies to; `snapshot` is the snapshot being applied, if any.
fn replay_changes(
    open: &mut BTreeSet<AlertKey>,
    changes: &[AlertChange],
    snapshot: Option<SnapshotRef>,
) -> Result<(), String> {
    for c in changes {
        match c {
            AlertChange::Opened { key, body, by } => {
                // The snapshot that caused it; the clock names none.
                let clock = matches!(
                    key.kind,
                    AlertKind::TransferNotReceived | AlertKind::SnapshotOverdue
                );
                if *by != snapshot && !(clock && by.is_none()) {
                    return Err(format!("Opened {key} naming {by:?}, expected {snapshot:?}"));
                }
                if !open.insert(key.clone()) {
                    return Err(format!("Opened {key}, which is already open"));
                }
                if body.severity != key.kind.severity() {
                    return Err(format!("Opened {key} with severity {:?}", body.severity));
                }
            }
            AlertChange::Updated { key, body, by } => {
                if !open.contains(key) {
                    return Err(format!("Updated {key}, which is not open"));
                }
                let clock = matches!(
                    key.kind,
                    AlertKind::TransferNotReceived | AlertKind::SnapshotOverdue
                );
                if *by != snapshot && !(clock && by.is_none()) {
                    return Err(format!(
                        "Updated {key} naming {by:?}, expected {snapshot:?}"
                    ));
                }
                if body.severity != key.kind.severity() {
                    return Err(format!("Updated {key} with severity {:?}", body.severity));
                }
            }
            AlertChange::Cleared { key, by } => {
                if !open.remove(key) {
                    return Err(format!("Cleared {key}, which is not open"));
                }
                // [I12]
                if *by != snapshot {
                    return Err(format!(
                        "Cleared {key} naming {by:?}, expected {snapshot:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The custody rule of docs/alerts.md, read naively off the whole history:
/// per state, its highest-sequence snapshot holding the key; the newest of
/// those by as-of time wins, ties all win; never held: the same over
/// listings. `declared_to` is left out (it follows the transfer records,
/// which the alert oracle covers).
fn oracle_custody(history: &[Event], k: &Key) -> Custody {
    struct PerState<'a> {
        code: StateCode,
        snaps: Vec<&'a Snap>,
    }
    let states: Vec<PerState<'_>> = states_seen(history)
        .into_iter()
        .map(|st| PerState {
            code: st,
            snaps: snapshots_of(history, st)
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
        })
        .collect();
    let last = |p: &PerState<'_>, f: &dyn Fn(&Snap) -> bool| -> Option<usize> {
        p.snaps.iter().rposition(|s| f(s))
    };
    let newest = |f: &dyn Fn(&Snap) -> bool| -> Vec<StateCode> {
        let found: Vec<(StateCode, i64)> = states
            .iter()
            .filter_map(|p| last(p, f).map(|i| (p.code, p.snaps[i].r.as_of_unix_ms)))
            .collect();
        let Some(top) = found.iter().map(|f| f.1).max() else {
            return Vec::new();
        };
        // `states_seen` is a BTreeSet: already in code order.
        found.iter().filter(|f| f.1 == top).map(|f| f.0).collect()
    };
    let mut custodians = newest(&|s| s.holds(k));
    if custodians.is_empty() {
        custodians = newest(&|s| s.lists(k));
    }
    let Some(&first) = custodians.first() else {
        return Custody::NeverReported;
    };
    let p = states
        .iter()
        .find(|p| p.code == first)
        .expect("custodian seen");
    let listed = last(p, &|s| s.lists(k)).expect("custodian listed it");
    let held = last(p, &|s| s.holds(k));
    let after = |i: usize| p.snaps.get(i + 1).map(|s| s.r);
    let mut last_status: Vec<Status> = p.snaps[listed].rows_of(k).map(|r| r.status).collect();
    last_status.sort_by_key(|s| s.code());
    last_status.dedup();
    Custody::Known {
        custodians: custodians.clone(),
        last_custodian: first,
        last_status,
        last_listed_in: p.snaps[listed].r,
        last_held_in: held.map(|i| p.snaps[i].r),
        gone_in: held.and_then(after),
        absent_since: after(listed),
        declared_to: Vec::new(),
        held_now_by: states
            .iter()
            .filter(|p| p.snaps.last().is_some_and(|s| s.holds(k)))
            .map(|p| p.code)
            .collect(),
    }
}

/// The engine's custody with `declared_to` cleared, for [`oracle_custody`].
fn engine_custody(engine: &Engine, k: &Key) -> Custody {
    let mut c = engine.custody(&item_key(k));
    if let Custody::Known { declared_to, .. } = &mut c {
        declared_to.clear();
    }
    c
}

/// After every event: the engine's open set equals the oracle's, and so
/// does the custody of every key of the universe.
fn check_against_oracle(setup: &Setup, events: &[Event]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(setup.config());
    for i in 0..events.len() {
        apply(&mut engine, &events[i]);
        let got = open_keys(&engine);
        let want = oracle(setup, &events[..=i]);
        if got != want {
            return Err(TestCaseError::fail(format!(
                "after event #{i} the engine and the oracle disagree\n{}\nevents:\n{}",
                diff(&got, &want),
                describe(setup, &events[..=i])
            )));
        }
        for u in 0..=UNIVERSE {
            let k = universe_key(u);
            let got = engine_custody(&engine, &k);
            let want = oracle_custody(&events[..=i], &k);
            if got != want {
                return Err(TestCaseError::fail(format!(
                    "after event #{i} the custody of {k:?} differs\nengine: {got:?}\noracle: {want:?}\nevents:\n{}",
                    describe(setup, &events[..=i])
                )));
            }
        }
        // A seized key's alert carries its custody as it stands now.
        for (key, body) in engine.open_alerts() {
            if key.kind == AlertKind::SeizedItem
                && let Some(item) = &key.item
                && body.custody.as_deref() != Some(&engine.custody(item))
            {
                return Err(TestCaseError::fail(format!(
                    "after event #{i} the seized alert {key} keeps a stale custody\nevents:\n{}",
                    describe(setup, &events[..=i])
                )));
            }
        }
    }
    Ok(())
}

/// The change stream replays to the open set; a repeated snapshot opens nothing.
fn check_change_stream(setup: &Setup, events: &[Event]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(setup.config());
    let mut replayed = BTreeSet::new();
    for i in 0..events.len() {
        let changes = apply(&mut engine, &events[i]);
        let fail = |why: String| {
            TestCaseError::fail(format!(
                "event #{i}: {why}\nchanges: {:#?}\nevents:\n{}",
                changes.iter().map(change_text).collect::<Vec<_>>(),
                describe(setup, &events[..=i])
            ))
        };
        let (snapshot, repeat) = match &events[i] {
            Event::Snapshot { snap, repeat, .. } => (Some(snap.r), *repeat),
            _ => (None, false),
        };
        replay_changes(&mut replayed, &changes, snapshot).map_err(fail)?;
        let got = open_keys(&engine);
        if replayed != got {
            return Err(fail(format!(
                "replaying the changes does not give open_alerts()\n{}",
                diff(&got, &replayed)
            )));
        }
        if repeat
            && changes
                .iter()
                .any(|c| matches!(c, AlertChange::Opened { .. }))
        {
            return Err(fail(
                "an identical repeated snapshot opened alerts".to_string(),
            ));
        }
    }
    // Then every state that submitted sends its latest rows once more (next
    // sequence, same as_of, same now): nothing may open.
    let Some(now) = events.iter().rev().find_map(Event::now) else {
        return Ok(());
    };
    let mut latest: BTreeMap<StateCode, &Snap> = BTreeMap::new();
    for e in events {
        if let Event::Snapshot { snap, .. } = e {
            latest.insert(snap.r.state, snap);
        }
    }
    for (st, snap) in latest {
        let again = SnapshotRef {
            sequence: snap.r.sequence + 1,
            digest: fake_digest(st, snap.r.sequence + 1, 2),
            ..snap.r
        };
        let changes = engine.apply_snapshot(again, snap.rows.iter().map(Row::view), &NoLines, now);
        let fail = |why: String| {
            TestCaseError::fail(format!(
                "{st} #{} repeated its #{} at the end: {why}\nchanges: {:#?}\nevents:\n{}",
                again.sequence,
                snap.r.sequence,
                changes.iter().map(change_text).collect::<Vec<_>>(),
                describe(setup, events)
            ))
        };
        replay_changes(&mut replayed, &changes, Some(again)).map_err(fail)?;
        if replayed != open_keys(&engine) {
            return Err(fail(
                "replaying the changes does not give open_alerts()".to_string(),
            ));
        }
        if changes
            .iter()
            .any(|c| matches!(c, AlertChange::Opened { .. }))
        {
            return Err(fail(
                "an identical repeated snapshot opened alerts".to_string(),
            ));
        }
    }
    Ok(())
}

/// A fresh engine fed the same snapshots, equivocations and seizures (at the
/// final now, without the intermediate ticks), then one tick at the final
/// now, has the same open alerts as the one that saw every event.
fn check_rebuild(setup: &Setup, events: &[Event]) -> Result<(), TestCaseError> {
    let mut incremental = Engine::new(setup.config());
    for e in events {
        apply(&mut incremental, e);
    }
    let Some(final_now) = events.iter().rev().find_map(Event::now) else {
        return Ok(());
    };
    let mut rebuilt = Engine::new(setup.config());
    for e in events {
        match e {
            Event::Snapshot { snap, .. } => {
                rebuilt.apply_snapshot(
                    snap.r,
                    snap.rows.iter().map(Row::view),
                    &NoLines,
                    final_now,
                );
            }
            Event::Equivocation(q) => {
                rebuilt.apply_equivocation(q);
            }
            Event::Seizure { seizure, .. } => {
                rebuilt.apply_seizure(seizure.clone(), &NoLines, final_now);
            }
            Event::Tick { .. } => {}
        }
    }
    rebuilt.tick(&NoLines, final_now);
    let (a, b) = (open_keys(&incremental), open_keys(&rebuilt));
    prop_assert!(
        a == b,
        "incremental != rebuilt\n{}\nevents:\n{}",
        diff_labelled(("incremental", &a), ("rebuilt", &b)),
        describe(setup, events)
    );
    Ok(())
}

/// An engine written to a checkpoint after event `split` and read back
/// continues exactly as the original: the same changes, in the same order,
/// for every later event, and at the end the same checkpoint bytes (keys,
/// ids, records, open alerts).
fn check_checkpoint(setup: &Setup, events: &[Event], split: usize) -> Result<(), TestCaseError> {
    let split = split.min(events.len());
    let config = setup.config();
    let mut original = Engine::new(config.clone());
    for e in &events[..split] {
        apply(&mut original, e);
    }
    let extra = serde_json::json!({ "split": split });
    let mut bytes = Vec::new();
    original
        .write_checkpoint(extra.clone(), &mut bytes)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (mut restored, extra_back) = Engine::read_checkpoint(&config, &bytes[..])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(extra_back, extra);
    for (i, e) in events.iter().enumerate().skip(split) {
        let (a, b) = (apply(&mut original, e), apply(&mut restored, e));
        prop_assert!(
            a == b,
            "event #{i} after a checkpoint at {split}: original {:?}, restored {:?}\nevents:\n{}",
            a.iter().map(change_text).collect::<Vec<_>>(),
            b.iter().map(change_text).collect::<Vec<_>>(),
            describe(setup, events)
        );
    }
    prop_assert_eq!(original.open_alerts(), restored.open_alerts());
    let encode = |engine: &Engine| {
        let mut out = Vec::new();
        engine
            .write_checkpoint(serde_json::Value::Null, &mut out)
            .map(|()| out)
    };
    let (a, b) = (
        encode(&original).map_err(|e| TestCaseError::fail(e.to_string()))?,
        encode(&restored).map_err(|e| TestCaseError::fail(e.to_string()))?,
    );
    prop_assert!(
        a == b,
        "the restored engine's state differs from the original's"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Random event sequences.

/// A change to a state's books before its next snapshot. Key indices are
/// into the universe, state indices into all six members (so counterparties
/// may be states that never submit).
#[derive(Clone, Debug)]
enum Edit {
    /// Replace the key's rows with one held row.
    Hold {
        key: u8,
        storage: bool,
        spelling: u8,
    },
    /// Remove every row of the key.
    Drop {
        key: u8,
    },
    /// Replace the key's rows with a `transferred_out` row.
    Transfer {
        key: u8,
        to: u8,
    },
    Dispose {
        key: u8,
        destroyed: bool,
    },
    Lose {
        key: u8,
    },
    /// Add one more row for the key (duplicates).
    AddRow {
        key: u8,
        status: u8,
        to: u8,
        spelling: u8,
    },
    /// Spell the key's rows differently (same canonical key).
    Respell {
        key: u8,
        spelling: u8,
    },
    /// Remove every row.
    Clear,
    /// Hold every key of the universe that has no row yet.
    HoldRest {
        spelling: u8,
    },
}

#[derive(Clone, Debug)]
enum Op {
    /// The state's next snapshot: its previous rows with some edits.
    Snap {
        state: u8,
        edits: Vec<Edit>,
        lag: u8,
    },
    /// A key moves between two submitting states: the sender drops it
    /// (`how` 0), declares it to the receiver (1, 2) or to another state (3);
    /// the receiver, if `received`, holds it; either may report first.
    Move {
        from: u8,
        to: u8,
        key: u8,
        how: u8,
        other: u8,
        received: bool,
        receiver_first: bool,
        spelling: u8,
    },
    /// The state's next snapshot repeats its previous rows exactly.
    Repeat {
        state: u8,
    },
    Equivocate {
        state: u8,
        seq: u8,
    },
    Seize {
        key: u8,
        spelling: u8,
    },
    Tick {
        dt: u8,
    },
}

#[derive(Clone, Debug)]
struct Scenario {
    states: usize,
    grace: i64,
    cadence: Vec<Option<i64>>,
    ops: Vec<Op>,
}

/// Key indices, most of them from a few hot keys so that edits of one key
/// follow each other often.
fn key_strategy() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![2 => 0u8..3, 1 => 0..UNIVERSE as u8]
}

/// Counterparties (indices into all six members), most of them from two.
fn to_strategy() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![2 => 0u8..2, 1 => 0u8..6]
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let key = key_strategy();
    prop_oneof![
        4 => (key.clone(), any::<bool>(), 0u8..36)
            .prop_map(|(key, storage, spelling)| Edit::Hold { key, storage, spelling }),
        3 => key.clone().prop_map(|key| Edit::Drop { key }),
        3 => (key.clone(), to_strategy()).prop_map(|(key, to)| Edit::Transfer { key, to }),
        1 => (key.clone(), any::<bool>()).prop_map(|(key, destroyed)| Edit::Dispose { key, destroyed }),
        1 => key.clone().prop_map(|key| Edit::Lose { key }),
        1 => (key.clone(), 0u8..6, 0u8..6, 0u8..36)
            .prop_map(|(key, status, to, spelling)| Edit::AddRow { key, status, to, spelling }),
        1 => (key, 0u8..36).prop_map(|(key, spelling)| Edit::Respell { key, spelling }),
        1 => Just(Edit::Clear),
        1 => (0u8..36).prop_map(|spelling| Edit::HoldRest { spelling }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..6, prop::collection::vec(edit_strategy(), 0..5), 0u8..20)
            .prop_map(|(state, edits, lag)| Op::Snap { state, edits, lag }),
        3 => (
            (0u8..6, 0u8..5, key_strategy(), 0u8..4),
            (0u8..6, any::<bool>(), any::<bool>(), 0u8..36),
        )
            .prop_map(
                |((from, to, key, how), (other, received, receiver_first, spelling))| Op::Move {
                    from,
                    to,
                    key,
                    how,
                    other,
                    received,
                    receiver_first,
                    spelling,
                }
            ),
        1 => (0u8..6).prop_map(|state| Op::Repeat { state }),
        1 => (0u8..6, 0u8..4).prop_map(|(state, seq)| Op::Equivocate { state, seq }),
        1 => (0..=UNIVERSE as u8, 0u8..36).prop_map(|(key, spelling)| Op::Seize { key, spelling }),
        3 => (0u8..26).prop_map(|dt| Op::Tick { dt }),
    ]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        2usize..=6,
        5i64..=40,
        prop::collection::vec(prop::option::of(20i64..=80), 6),
        prop::collection::vec(op_strategy(), 1..=30),
    )
        .prop_map(|(states, grace, cadence, ops)| Scenario {
            states,
            grace,
            cadence,
            ops,
        })
}

fn apply_edit(rows: &mut Vec<Row>, edit: &Edit) {
    let k = |key: &u8| usize::from(*key);
    let replace = |rows: &mut Vec<Row>, key: usize, row: Option<Row>| {
        let key = universe_key(key);
        rows.retain(|r| r.key != key);
        rows.extend(row);
    };
    match edit {
        Edit::Hold {
            key,
            storage,
            spelling,
        } => {
            let status = if *storage {
                Status::InStorage
            } else {
                Status::InService
            };
            replace(
                rows,
                k(key),
                Some(Row::new(k(key), status, None, *spelling)),
            );
        }
        Edit::Drop { key } => replace(rows, k(key), None),
        Edit::Transfer { key, to } => {
            let row = Row::new(k(key), Status::TransferredOut, Some(state(k(to))), 0);
            replace(rows, k(key), Some(row));
        }
        Edit::Dispose { key, destroyed } => {
            let status = if *destroyed {
                Status::Destroyed
            } else {
                Status::Expended
            };
            replace(rows, k(key), Some(Row::new(k(key), status, None, 0)));
        }
        Edit::Lose { key } => replace(rows, k(key), Some(Row::new(k(key), Status::Lost, None, 0))),
        Edit::AddRow {
            key,
            status,
            to,
            spelling,
        } => {
            let status = Status::ALL[usize::from(*status) % Status::ALL.len()];
            rows.push(Row::new(k(key), status, Some(state(k(to))), *spelling));
        }
        Edit::Respell { key, spelling } => {
            let key = universe_key(k(key));
            for r in rows.iter_mut().filter(|r| r.key == key) {
                r.raw_model = spell(&key.0, *spelling);
                r.raw_serial = spell(&key.1, *spelling / 6);
            }
        }
        Edit::Clear => rows.clear(),
        Edit::HoldRest { spelling } => {
            for i in 0..UNIVERSE {
                if !rows.iter().any(|r| r.key == universe_key(i)) {
                    rows.push(Row::new(i, Status::InStorage, None, *spelling));
                }
            }
        }
    }
}

impl Scenario {
    fn setup(&self) -> Setup {
        Setup {
            grace: self.grace,
            cadence: self
                .cadence
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.map(|c| (state(i), c)))
                .collect(),
        }
    }

    /// Interprets the ops into concrete events.
    fn events(&self) -> Vec<Event> {
        let n = self.states;
        let member = |i: u8| state(usize::from(i) % n);
        let mut b = Builder::new();
        let mut books: BTreeMap<StateCode, Vec<Row>> = BTreeMap::new();
        for op in &self.ops {
            match op {
                Op::Snap {
                    state: s,
                    edits,
                    lag,
                } => {
                    let st = member(*s);
                    let rows = books.entry(st).or_default();
                    for e in edits {
                        apply_edit(rows, e);
                    }
                    b.snapshot(st, i64::from(*lag), rows.clone(), false);
                }
                Op::Move {
                    from,
                    to,
                    key,
                    how,
                    other,
                    received,
                    receiver_first,
                    spelling,
                } => {
                    let sender = member(*from);
                    // A receiver other than the sender.
                    let receiver = member(*from + 1 + *to % (n as u8 - 1));
                    let send = match how {
                        0 => Edit::Drop { key: *key },
                        1 | 2 => Edit::Transfer {
                            key: *key,
                            to: MEMBER_STATES
                                .iter()
                                .position(|s| *s == receiver.as_str())
                                .unwrap_or(0) as u8,
                        },
                        _ => Edit::Transfer {
                            key: *key,
                            to: *other,
                        },
                    };
                    let receive = Edit::Hold {
                        key: *key,
                        storage: *spelling % 2 == 0,
                        spelling: *spelling,
                    };
                    let mut steps = vec![(sender, send)];
                    if *received {
                        steps.push((receiver, receive));
                        if *receiver_first {
                            steps.reverse();
                        }
                    }
                    for (st, e) in steps {
                        let rows = books.entry(st).or_default();
                        apply_edit(rows, &e);
                        b.snapshot(st, 0, rows.clone(), false);
                    }
                }
                Op::Repeat { state: s } => {
                    let st = member(*s);
                    let rows = books.entry(st).or_default().clone();
                    let first = !b.seq.contains_key(&st);
                    b.snapshot(st, 0, rows, !first);
                }
                Op::Equivocate { state: s, seq } => {
                    let st = member(*s);
                    let used = b.seq.get(&st).copied().unwrap_or(0);
                    b.equivocate(st, 1 + u64::from(*seq) % (used + 1));
                }
                Op::Seize { key, spelling } => b.seize(usize::from(*key), *spelling),
                Op::Tick { dt } => b.tick(i64::from(*dt)),
            }
        }
        b.events
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_oracle_after_every_event(s in scenario_strategy()) {
        check_against_oracle(&s.setup(), &s.events())?;
    }

    #[test]
    fn change_stream_replays_to_open_alerts(s in scenario_strategy()) {
        check_change_stream(&s.setup(), &s.events())?;
    }

    #[test]
    fn incremental_equals_rebuild(s in scenario_strategy()) {
        check_rebuild(&s.setup(), &s.events())?;
    }

    #[test]
    fn a_checkpoint_continues_exactly_as_the_engine_that_wrote_it(
        s in scenario_strategy(),
        split in 0usize..64,
    ) {
        check_checkpoint(&s.setup(), &s.events(), split)?;
    }
}

// ---------------------------------------------------------------------------
// Hand-written scenarios: they pin the oracle itself to the rule table, and
// the engine with it.

mod expect {
    use super::*;
    use AlertKind::*;

    pub fn k(i: usize) -> Key {
        universe_key(i)
    }
    pub fn dup(i: usize, s: &str) -> AlertKey {
        alert(DuplicateInSnapshot, Some(&k(i)), Some(code(s)), None, None)
    }
    pub fn several(i: usize) -> AlertKey {
        alert(HeldBySeveralStates, Some(&k(i)), None, None, None)
    }
    pub fn unaccounted(i: usize, s: &str) -> AlertKey {
        alert(
            UnaccountedDisappearance,
            Some(&k(i)),
            Some(code(s)),
            None,
            None,
        )
    }
    pub fn undeclared(i: usize, s: &str) -> AlertKey {
        alert(UndeclaredTransfer, Some(&k(i)), Some(code(s)), None, None)
    }
    pub fn not_received(i: usize, from: &str, to: &str) -> AlertKey {
        alert(
            TransferNotReceived,
            Some(&k(i)),
            Some(code(from)),
            Some(code(to)),
            None,
        )
    }
    pub fn reappears(i: usize) -> AlertKey {
        alert(DisposedItemReappears, Some(&k(i)), None, None, None)
    }
    pub fn lost(i: usize, s: &str) -> AlertKey {
        alert(ReportedLost, Some(&k(i)), Some(code(s)), None, None)
    }
    pub fn seized(i: usize) -> AlertKey {
        alert(SeizedItem, Some(&k(i)), None, None, None)
    }
    pub fn conflicting(s: &str, q: u64) -> AlertKey {
        alert(ConflictingSubmission, None, Some(code(s)), None, Some(q))
    }
    pub fn overdue(s: &str) -> AlertKey {
        alert(SnapshotOverdue, None, Some(code(s)), None, None)
    }
}

/// A hand-written script: events plus the expected open set at checkpoints.
struct Script {
    setup: Setup,
    b: Builder,
}

impl Script {
    fn new(grace: i64, cadence: &[(&str, i64)]) -> Script {
        Script {
            setup: Setup {
                grace,
                cadence: cadence.iter().map(|(s, c)| (code(s), *c)).collect(),
            },
            b: Builder::new(),
        }
    }

    fn snap(&mut self, s: &str, lag: i64, rows: &[(usize, Status, Option<&str>, u8)]) -> &mut Self {
        let rows = rows
            .iter()
            .map(|(k, st, cp, sp)| Row::new(*k, *st, cp.map(code), *sp))
            .collect();
        self.b.snapshot(code(s), lag, rows, false);
        self
    }

    fn tick(&mut self, dt: i64) -> &mut Self {
        self.b.tick(dt);
        self
    }

    /// The oracle must give exactly `expected`; then so must the engine.
    fn expect(&mut self, expected: &[AlertKey]) -> &mut Self {
        let expected: BTreeSet<AlertKey> = expected.iter().cloned().collect();
        let events = &self.b.events;
        let o = oracle(&self.setup, events);
        assert!(
            o == expected,
            "oracle is wrong\n{}\nevents:\n{}",
            diff_labelled(("oracle", &o), ("expected", &expected)),
            describe(&self.setup, events)
        );
        if let Err(e) = check_against_oracle(&self.setup, events) {
            panic!("{e}");
        }
        self
    }
}

use Status::{Destroyed, Expended, InService, InStorage, Lost, TransferredOut};

#[test]
fn spellings_are_canonical_variants() {
    let rule = CanonicalRule::default();
    for i in 0..=UNIVERSE {
        let (m, s) = universe_key(i);
        for v in 0..36u8 {
            assert_eq!(rule.canonicalize(&spell(&m, v)), m, "{:?}", spell(&m, v));
            assert_eq!(rule.canonicalize(&spell(&s, v)), s, "{:?}", spell(&s, v));
        }
    }
}

#[test]
fn move_without_declaration() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("RUS", 0, &[(0, InService, None, 0)])
        .snap("BLR", 0, &[])
        .expect(&[])
        .snap("RUS", 0, &[])
        .expect(&[unaccounted(0, "RUS")])
        .snap("BLR", 0, &[(0, InStorage, None, 3)])
        .expect(&[undeclared(0, "RUS")])
        // Listed again with any status: the vanished record goes.
        .snap("RUS", 0, &[(0, Lost, None, 0)])
        .expect(&[lost(0, "RUS")])
        .snap("RUS", 0, &[(0, InService, None, 7)])
        .expect(&[several(0)]);
}

#[test]
fn transfer_grace_receipt_and_later_drop() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("RUS", 0, &[(1, InService, None, 0)])
        .snap("RUS", 0, &[(1, TransferredOut, Some("KAZ"), 0)])
        .tick(9)
        .expect(&[])
        .tick(1)
        .expect(&[not_received(1, "RUS", "KAZ")])
        // The declaration repeated: same record, same grace.
        .snap("RUS", 0, &[(1, TransferredOut, Some("KAZ"), 2)])
        .expect(&[not_received(1, "RUS", "KAZ")])
        .snap("KAZ", 0, &[(1, InService, None, 4)])
        .expect(&[])
        // Received, so the record is gone: KAZ dropping it is KAZ's matter.
        .snap("KAZ", 0, &[])
        .expect(&[unaccounted(1, "KAZ")]);
}

#[test]
fn declaration_dropped_then_repeated_keeps_its_grace() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("RUS", 0, &[(2, TransferredOut, Some("TJK"), 0)])
        .tick(5)
        // [I3] The row dropped: the record stays.
        .snap("RUS", 0, &[])
        .tick(4)
        .expect(&[])
        // Declared again: still the record of RUS #1, due at T0+10.
        .snap("RUS", 0, &[(2, TransferredOut, Some("TJK"), 0)])
        .tick(1)
        .expect(&[not_received(2, "RUS", "TJK")])
        // Withdrawn, then declared anew: a new grace period.
        .snap("RUS", 0, &[(2, InStorage, None, 0)])
        .expect(&[])
        .snap("RUS", 0, &[(2, TransferredOut, Some("TJK"), 0)])
        .tick(9)
        .expect(&[])
        .tick(1)
        .expect(&[not_received(2, "RUS", "TJK")]);
}

#[test]
fn counterparty_change_withdraws_and_redeclares() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("RUS", 0, &[(3, TransferredOut, Some("KAZ"), 0)])
        .tick(5)
        .snap("RUS", 0, &[(3, TransferredOut, Some("BLR"), 0)])
        .tick(7)
        .expect(&[])
        .tick(3)
        .expect(&[not_received(3, "RUS", "BLR")])
        // [I4] both declared in one snapshot: BLR's stays, KAZ's is new.
        .snap(
            "RUS",
            0,
            &[
                (3, TransferredOut, Some("BLR"), 0),
                (3, TransferredOut, Some("KAZ"), 1),
            ],
        )
        .expect(&[not_received(3, "RUS", "BLR"), dup(3, "RUS")])
        .tick(10)
        .expect(&[
            not_received(3, "RUS", "BLR"),
            not_received(3, "RUS", "KAZ"),
            dup(3, "RUS"),
        ])
        .snap("RUS", 0, &[(3, InStorage, None, 0)])
        .expect(&[]);
}

#[test]
fn stale_deadlines_do_not_fire() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    // Declared at T0 (due T0+10), withdrawn, declared again at T0+5 (due T0+15).
    s.snap("ARM", 0, &[(0, TransferredOut, Some("KGZ"), 0)])
        .tick(2)
        .snap("ARM", 0, &[(0, InService, None, 0)])
        .tick(3)
        .snap("ARM", 0, &[(0, TransferredOut, Some("KGZ"), 0)])
        .tick(5)
        .expect(&[])
        .tick(4)
        .expect(&[])
        .tick(1)
        .expect(&[not_received(0, "ARM", "KGZ")]);
    // Received, then declared anew after a withdrawal: the old deadline is gone too.
    let mut s = Script::new(10, &[]);
    s.snap("ARM", 0, &[(1, TransferredOut, Some("KGZ"), 0)])
        .snap("KGZ", 0, &[(1, InService, None, 0)])
        .tick(3)
        .snap("KGZ", 0, &[])
        .snap("ARM", 0, &[(1, InStorage, None, 0)])
        .snap("ARM", 0, &[(1, TransferredOut, Some("KGZ"), 0)])
        .tick(7)
        .expect(&[unaccounted(1, "KGZ")])
        .tick(3)
        .expect(&[unaccounted(1, "KGZ"), not_received(1, "ARM", "KGZ")]);
}

#[test]
fn transfer_to_a_state_that_already_holds_is_received_at_once() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("KAZ", 0, &[(4, InService, None, 0)])
        .snap("RUS", 0, &[(4, TransferredOut, Some("KAZ"), 0)])
        .tick(20)
        .expect(&[])
        // [I5] received at declaration: KAZ dropping it later opens no transfer alert.
        .snap("KAZ", 0, &[])
        .expect(&[unaccounted(4, "KAZ")]);
}

#[test]
fn disposed_item_reappears_and_clears() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap("BLR", 0, &[(5, InService, None, 0)])
        .snap("RUS", 0, &[(5, Destroyed, None, 0)])
        // [I7] BLR held it before the disposal: still open.
        .expect(&[reappears(5)])
        .snap("BLR", 0, &[])
        .expect(&[unaccounted(5, "BLR")])
        .snap("RUS", 0, &[(5, InService, None, 0)])
        .expect(&[reappears(5), undeclared(5, "BLR")])
        // [I7] the disposal is never forgotten, even after RUS stops listing it.
        .snap("ARM", 0, &[(6, Expended, None, 0), (6, InStorage, None, 5)])
        .expect(&[
            reappears(5),
            undeclared(5, "BLR"),
            reappears(6),
            dup(6, "ARM"),
        ]);
}

#[test]
fn duplicates_across_spellings_and_lost_after_drop() {
    use expect::*;
    let mut s = Script::new(10, &[]);
    s.snap(
        "KGZ",
        0,
        &[
            (7, InService, None, 0),
            (7, InService, None, 21),
            (8, Lost, None, 0),
        ],
    )
    .expect(&[dup(7, "KGZ"), lost(8, "KGZ")])
    // [I8] the most recent mention is still the lost row.
    .snap("KGZ", 0, &[(7, InService, None, 3)])
    .expect(&[lost(8, "KGZ")])
    .snap(
        "KGZ",
        0,
        &[(7, InService, None, 3), (8, InService, None, 0)],
    )
    .expect(&[]);
}

#[test]
fn overdue_equivocation_and_seizure() {
    use expect::*;
    let mut s = Script::new(10, &[("RUS", 30), ("KAZ", 30)]);
    // [I10] KAZ never submits: never overdue.
    s.tick(0).expect(&[]).tick(1000).expect(&[]);
    // The cadence runs from as_of, not from the arrival.
    s.snap("RUS", 5, &[(9, InService, None, 0)])
        .expect(&[])
        .tick(25)
        .expect(&[])
        .tick(1)
        .expect(&[overdue("RUS")]);
    s.b.equivocate(code("RUS"), 1);
    s.b.seize(UNIVERSE, 4);
    s.b.seize(9, 3);
    s.expect(&[
        overdue("RUS"),
        conflicting("RUS", 1),
        seized(UNIVERSE),
        seized(9),
    ]);
    s.snap("RUS", 0, &[]).expect(&[
        conflicting("RUS", 1),
        seized(UNIVERSE),
        seized(9),
        unaccounted(9, "RUS"),
    ]);
}
