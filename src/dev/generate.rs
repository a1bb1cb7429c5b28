//! Seeded generation of realistic inventory exports, for benchmarks, tests
//! and the demo. Deterministic: the same seed gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::item::Status;
use crate::reconcile::AlertKind;
use crate::state::{MEMBER_STATES, StateCode};

/// Model codes of MANPADS launchers, missiles and small arms.
pub const MODELS: [&str; 8] = [
    "9K38", "9P39", "9M39", "9K310", "9M313", "9P516", "AK-74M", "PKM",
];

/// SplitMix64: tiny, fast, and good enough for test data (not for keys).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A CSV export of `n` distinct held items for `state`: serials like
/// `KA-0012345`, a few percent spelled with Cyrillic look-alikes or in lower
/// case, as real ministry records are.
pub fn inventory_csv(state: StateCode, n: usize, seed: u64) -> String {
    let mut rng = SplitMix::new(seed);
    let mut out = String::with_capacity(n * 40 + 64);
    out.push_str("model,serial,status,site,counterparty\n");
    let prefix = &state.as_str()[..2];
    for i in 0..n {
        let model = MODELS[i % MODELS.len()];
        let status = if rng.below(3) == 0 {
            "in_storage"
        } else {
            "in_service"
        };
        let depot = rng.below(40);
        let serial = match rng.below(50) {
            // Cyrillic К and А: the same key as the Latin spelling.
            0 => format!("КА-{prefix}{i:08}"),
            1 => format!("ka-{}{i:08}", prefix.to_lowercase()),
            _ => format!("KA-{prefix}{i:08}"),
        };
        let _ = writeln!(out, "{model},{serial},{status},Depot {depot},");
    }
    out
}

// ---------------------------------------------------------------------------
// Reconciliation scenario: two rounds of exports with planted discrepancies.
// ---------------------------------------------------------------------------

/// What to generate: `states` × `items_per_state` held items in round 1, a
/// round 2 that differs from it in about `change_percent` % of the items,
/// and `planted_per_kind` planted cases of every discrepancy (and of every
/// look-alike that must not alert) per state.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioConfig {
    pub states: Vec<StateCode>,
    pub items_per_state: usize,
    pub change_percent: f64,
    pub planted_per_kind: usize,
    pub seed: u64,
    /// Also plant the [`story`] cases: a few named MANPADS launchers with a
    /// history worth telling (the demo seizes them). Needs all six member
    /// states.
    pub story: bool,
    /// Round 2's background changes by kind, instead of `change_percent` of
    /// changes that open nothing: see [`RoundProfile`].
    pub round_profile: Option<RoundProfile>,
}

/// How a real monthly round differs from the previous one, in percent of
/// each state's items, by kind of change. Unlike the default background
/// (`change_percent`), some of these open alerts, as they would in a real
/// round: every row gone opens `unaccounted_disappearance` and every `lost`
/// opens `reported_lost` (both counted in [`Scenario::expected`]); a
/// transfer is `transferred_out` to another member that lists the item held
/// in the same round (confirmed: nothing once both have reported, but the
/// order of submission decides what a round shows while it is under way).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundProfile {
    pub site_moves: f64,
    /// `in_service` ↔ `in_storage`.
    pub status_flips: f64,
    pub new_deliveries: f64,
    /// Rows dropped without a declaration.
    pub gone: f64,
    /// Confirmed transfers to another member (none with a single state).
    pub transfers: f64,
    /// `destroyed` or `expended`.
    pub disposals: f64,
    pub lost: f64,
    /// The same key spelled differently (within the canonical rule).
    pub respelled: f64,
}

impl RoundProfile {
    /// The profile observed in real rounds: 12 % site moves, 7 %
    /// `in_service`↔`in_storage`, 4 % new deliveries, 2 % rows gone, 2 %
    /// confirmed transfers, 2 % disposals, 1 % lost, 0.5 % re-spelled
    /// (about 30 % of the rows differ).
    pub fn realistic() -> RoundProfile {
        RoundProfile {
            site_moves: 12.0,
            status_flips: 7.0,
            new_deliveries: 4.0,
            gone: 2.0,
            transfers: 2.0,
            disposals: 2.0,
            lost: 1.0,
            respelled: 0.5,
        }
    }

    /// Items changed in place (new deliveries are added, not changed).
    fn changed_percent(&self) -> f64 {
        self.site_moves
            + self.status_flips
            + self.gone
            + self.transfers
            + self.disposals
            + self.lost
            + self.respelled
    }
}

impl ScenarioConfig {
    /// The first `states` member states (at most six), 1 % change, and
    /// `max(3, items / 10,000)` planted cases per kind and state.
    pub fn new(states: usize, items_per_state: usize, seed: u64) -> ScenarioConfig {
        ScenarioConfig {
            states: MEMBER_STATES
                .iter()
                .take(states.clamp(1, MEMBER_STATES.len()))
                .filter_map(|s| StateCode::parse(s).ok())
                .collect(),
            items_per_state,
            change_percent: 1.0,
            planted_per_kind: (items_per_state / 10_000).max(3),
            seed,
            story: false,
            round_profile: None,
        }
    }
}

/// The seven kinds a scenario plants (the others need seizures, conflicting
/// signatures or cadences, which are not in exports).
pub const PLANTED_KINDS: [AlertKind; 7] = [
    AlertKind::DuplicateInSnapshot,
    AlertKind::HeldBySeveralStates,
    AlertKind::UnaccountedDisappearance,
    AlertKind::UndeclaredTransfer,
    AlertKind::TransferNotReceived,
    AlertKind::DisposedItemReappears,
    AlertKind::ReportedLost,
];

/// One CSV row, raw as a ministry would write it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    model: String,
    serial: String,
    status: Status,
    site: String,
    counterparty: Option<StateCode>,
}

impl Row {
    fn with_status(&self, status: Status, counterparty: Option<StateCode>) -> Row {
        Row {
            status,
            counterparty,
            ..self.clone()
        }
    }

    fn write_to(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            self.model,
            self.serial,
            self.status.as_str(),
            self.site,
            self.counterparty.as_ref().map_or("", |c| c.as_str())
        );
    }
}

/// What one state lists in each round. Base item `i` (in `0..items_per_state`)
/// is listed once, unchanged, in both rounds unless `overrides` says otherwise;
/// `extra` rows follow the base rows.
#[derive(Debug, Default)]
struct StatePlan {
    overrides: BTreeMap<usize, [Vec<Row>; 2]>,
    extra: [Vec<Row>; 2],
}

/// A generated two-round scenario: the exports of every state for both rounds,
/// rendered on demand, and the alerts a reconciliation must leave open.
///
/// Every planted case uses its own item key, so the expected count of each
/// kind is the number of cases planted for it; cases were chosen so that the
/// result does not depend on the order in which states submit within a round.
/// The rules are those of [`crate::reconcile`] with a transfer grace period of
/// zero and every snapshot's as-of time in the past.
#[derive(Debug)]
pub struct Scenario {
    config: ScenarioConfig,
    plans: Vec<StatePlan>,
    expected: BTreeMap<AlertKind, usize>,
    story: Vec<StoryCase>,
}

/// Latin capitals of serials and model codes and the Cyrillic letters that
/// look like them (docs/protocol.md §2.3), capital and lower case.
const LOOKALIKES: [(char, char, char); 11] = [
    ('A', 'А', 'а'),
    ('B', 'В', 'в'),
    ('E', 'Е', 'е'),
    ('K', 'К', 'к'),
    ('M', 'М', 'м'),
    ('H', 'Н', 'н'),
    ('O', 'О', 'о'),
    ('P', 'Р', 'р'),
    ('C', 'С', 'с'),
    ('T', 'Т', 'т'),
    ('X', 'Х', 'х'),
];

/// Number of spellings [`spell_serial`] knows.
const SERIAL_SPELLINGS: u64 = 7;

/// Spelling `variant` of the serial of item `i` of a state: all spellings
/// have the canonical form `KA{STATE}{i:08}`.
fn spell_serial(state: &str, i: usize, variant: u64) -> String {
    let cyrillic = |s: &str, lower: bool| -> String {
        s.chars()
            .map(|c| match LOOKALIKES.iter().find(|l| l.0 == c) {
                Some(&(_, upper, low)) => {
                    if lower {
                        low
                    } else {
                        upper
                    }
                }
                None if lower => c.to_ascii_lowercase(),
                None => c,
            })
            .collect()
    };
    match variant % SERIAL_SPELLINGS {
        0 => format!("KA-{state}{i:08}"),
        1 => format!("{}-{state}{i:08}", cyrillic("KA", false)),
        2 => format!("ka-{}{i:08}", state.to_ascii_lowercase()),
        3 => format!("{}-{i:08}", cyrillic(&format!("KA{state}"), true)),
        4 => format!("KA-{state}-{:04}-{:04}", i / 10_000, i % 10_000),
        5 => format!("KA {state} {i:08}"),
        _ => format!("{}{i:08}", cyrillic(&format!("KA{state}"), false)),
    }
}

/// Spelling `variant` of a model code: as listed, lower case, Cyrillic
/// look-alikes, or without hyphens.
fn spell_model(model: &str, variant: u64) -> String {
    match variant % 4 {
        0 => model.to_string(),
        1 => model.to_ascii_lowercase(),
        2 => model
            .chars()
            .map(|c| LOOKALIKES.iter().find(|l| l.0 == c).map_or(c, |l| l.1))
            .collect(),
        _ => model.replace('-', ""),
    }
}

fn row_rng(seed: u64, state: usize, i: usize) -> SplitMix {
    let mut r = SplitMix::new(
        seed ^ (state as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)
            ^ (i as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25),
    );
    r.next_u64();
    r
}

/// Base item `i` of state number `s`, as round 1 lists it.
fn base_row(seed: u64, s: usize, state: StateCode, i: usize) -> Row {
    let mut rng = row_rng(seed, s, i);
    let r = rng.next_u64();
    let status = if r.is_multiple_of(3) {
        Status::InStorage
    } else {
        Status::InService
    };
    // 96 % in the usual spelling; the rest in the other spellings.
    let spelling = match (r >> 8) % 100 {
        v @ 0..=3 => 1 + v % (SERIAL_SPELLINGS - 1),
        _ => 0,
    };
    let model_spelling = u64::from((r >> 16).is_multiple_of(100));
    Row {
        model: spell_model(MODELS[i % MODELS.len()], model_spelling),
        serial: spell_serial(state.as_str(), i, spelling),
        status,
        site: format!("Depot {}", (r >> 24) % 40),
        counterparty: None,
    }
}

/// The same key as `row`, spelled differently (another state's records).
fn respelled(row: &Row, state: StateCode, i: usize, n: u64) -> Row {
    let current = (0..SERIAL_SPELLINGS)
        .find(|v| spell_serial(state.as_str(), i, *v) == row.serial)
        .unwrap_or(0);
    let mut variant = 1 + n % (SERIAL_SPELLINGS - 1);
    if variant == current {
        variant = 1 + variant % (SERIAL_SPELLINGS - 1);
    }
    let model = MODELS[i % MODELS.len()];
    Row {
        model: spell_model(model, n / 2 + 1),
        serial: spell_serial(state.as_str(), i, variant),
        status: if n.is_multiple_of(2) {
            Status::InService
        } else {
            Status::InStorage
        },
        site: format!("Base {}", n % 17),
        counterparty: None,
    }
}

/// Generates a two-round scenario (see [`Scenario`]).
///
/// Per state and per planted case `j` (`0..planted_per_kind`), with `t`
/// another state:
/// - duplicate in round 2 (new, or already in round 1): +1 `duplicate_in_snapshot`;
///   duplicate in round 1 only: 0;
/// - also held by `t` in round 2 (new, or since round 1): +1 `held_by_several_states`;
///   held by both in round 1, then `t` declares it transferred to the holder: 0;
/// - dropped without declaration in round 2: +1 `unaccounted_disappearance`;
///   dropped and held by `t` in round 2 (or since round 1): +1 `undeclared_transfer`;
/// - declared `transferred_out` to `t` (in round 2, in both rounds, or in round 1
///   and then dropped) and `t` never holds it: +1 `transfer_not_received`;
///   declared and `t` holds it in round 2 (or from round 1): 0 (confirmed transfer);
/// - declared destroyed in round 1 and held in round 2, or declared expended
///   or destroyed and held by `t` in round 2: +1 `disposed_item_reappears`;
/// - most recent mention `lost` (lost in round 2, in both, or in round 1 and
///   then dropped): +1 `reported_lost`; lost in round 1, held in round 2: 0.
///
/// Background changes (status `in_service`↔`in_storage`, site moves, new
/// items, disposals without reappearance, re-spelled serials) bring round 2's
/// difference from round 1 to about `change_percent` % of the items and open
/// nothing. Deterministic for a seed.
pub fn reconcile_scenario(config: &ScenarioConfig) -> Scenario {
    use Status::*;
    let n_states = config.states.len();
    let m = config.items_per_state;
    let p = config.planted_per_kind;
    let cross = n_states >= 2;
    // Own-key cases per state: 11 kinds of case, `p` each.
    let planted_rows = 11 * p;
    let share = |percent: f64| ((m as f64) * percent / 100.0).round() as usize;
    let changes = match &config.round_profile {
        Some(profile) => share(profile.changed_percent()),
        None => share(config.change_percent),
    };
    assert!(
        planted_rows + changes <= m / 2,
        "{m} items per state are too few for {p} planted cases per kind and {}% change",
        config.change_percent
    );
    let mut rng = SplitMix::new(config.seed ^ 0x5CE7_A210);
    let mut plans: Vec<StatePlan> = (0..n_states).map(|_| StatePlan::default()).collect();
    let mut expected: BTreeMap<AlertKind, usize> = PLANTED_KINDS.iter().map(|k| (*k, 0)).collect();
    let mut bump = |kind: AlertKind| *expected.entry(kind).or_default() += 1;

    for s in 0..n_states {
        let state = config.states[s];
        let mut used = BTreeSet::new();
        let mut pick = |rng: &mut SplitMix| loop {
            let i = rng.below(m as u64) as usize;
            if used.insert(i) {
                return i;
            }
        };
        let other = |j: usize| (s + 1 + j % (n_states - 1).max(1)) % n_states;
        let base = |i: usize| base_row(config.seed, s, state, i);
        // `own[i] = [round 1 rows, round 2 rows]` of this state; rows other
        // states add go to their `extra`.
        let mut own: Vec<(usize, [Vec<Row>; 2])> = Vec::new();
        let mut add: Vec<(usize, usize, Row)> = Vec::new(); // (state, round, row)
        for j in 0..p {
            let jj = j as u64;
            // Duplicates.
            let i = pick(&mut rng);
            let b = base(i);
            let mut dup = respelled(&b, state, i, jj);
            dup.status = b.status;
            if j % 2 == 0 {
                own.push((i, [vec![b.clone()], vec![b, dup]]));
            } else {
                own.push((i, [vec![b.clone(), dup.clone()], vec![b, dup]]));
            }
            bump(AlertKind::DuplicateInSnapshot);
            let i = pick(&mut rng);
            let b = base(i);
            let dup = respelled(&b, state, i, jj + 1);
            own.push((i, [vec![b.clone(), dup], vec![b]]));

            // Disappearance without declaration, nobody holds it.
            let i = pick(&mut rng);
            own.push((i, [vec![base(i)], vec![]]));
            bump(AlertKind::UnaccountedDisappearance);

            // Disposed, then held again by the same state.
            if !cross || j % 3 == 0 {
                let i = pick(&mut rng);
                let b = base(i);
                own.push((i, [vec![b.with_status(Destroyed, None)], vec![b]]));
                bump(AlertKind::DisposedItemReappears);
            }

            // Lost.
            let i = pick(&mut rng);
            let b = base(i);
            let lost = b.with_status(Lost, None);
            own.push((
                i,
                match j % 3 {
                    0 => [vec![b], vec![lost]],
                    1 => [vec![lost], vec![]],
                    _ => [vec![lost.clone()], vec![lost]],
                },
            ));
            bump(AlertKind::ReportedLost);
            // Lost and found again: clears.
            let i = pick(&mut rng);
            let b = base(i);
            own.push((
                i,
                [
                    vec![b.with_status(Lost, None)],
                    vec![b.with_status(InStorage, None)],
                ],
            ));

            if !cross {
                continue;
            }
            let t = other(j);
            let tc = config.states[t];

            // Held by two states.
            let i = pick(&mut rng);
            let b = base(i);
            let foreign = respelled(&b, state, i, jj);
            add.push((t, 1, foreign.clone()));
            if j % 2 == 1 {
                add.push((t, 0, foreign));
            }
            bump(AlertKind::HeldBySeveralStates);
            // Held by two states in round 1; in round 2 `t` declares it
            // transferred to this state, which holds it: clears.
            let i = pick(&mut rng);
            let b = base(i);
            let foreign = respelled(&b, state, i, jj + 3);
            add.push((t, 0, foreign.clone()));
            add.push((t, 1, foreign.with_status(TransferredOut, Some(state))));

            // Disappearance, and another state holds it now.
            let i = pick(&mut rng);
            let b = base(i);
            let foreign = respelled(&b, state, i, jj + 1);
            own.push((i, [vec![b], vec![]]));
            add.push((t, 1, foreign.clone()));
            if j % 2 == 1 {
                add.push((t, 0, foreign));
            }
            bump(AlertKind::UndeclaredTransfer);

            // Declared transfer that never arrives.
            let i = pick(&mut rng);
            let b = base(i);
            let out = b.with_status(TransferredOut, Some(tc));
            own.push((
                i,
                match j % 3 {
                    0 => [vec![b], vec![out]],
                    1 => [vec![out.clone()], vec![out]],
                    _ => [vec![out], vec![]],
                },
            ));
            bump(AlertKind::TransferNotReceived);

            // Confirmed transfer: must not alert.
            let i = pick(&mut rng);
            let b = base(i);
            let out = b.with_status(TransferredOut, Some(tc));
            let foreign = respelled(&b, state, i, jj + 2);
            match j % 3 {
                0 => {
                    own.push((i, [vec![b], vec![out]]));
                    add.push((t, 1, foreign));
                }
                1 => {
                    own.push((i, [vec![out.clone()], vec![out]]));
                    add.push((t, 1, foreign));
                }
                _ => {
                    own.push((i, [vec![out], vec![]]));
                    add.push((t, 0, foreign.clone()));
                    add.push((t, 1, foreign));
                }
            }

            // Disposed here, held by another state in round 2.
            if j % 3 != 0 {
                let i = pick(&mut rng);
                let b = base(i);
                let foreign = respelled(&b, state, i, jj + 4);
                if j % 3 == 1 {
                    own.push((i, [vec![b.clone()], vec![b.with_status(Expended, None)]]));
                } else {
                    own.push((i, [vec![b.with_status(Destroyed, None)], vec![]]));
                }
                add.push((t, 1, foreign));
                bump(AlertKind::DisposedItemReappears);
            }
        }

        let mut new_items = 0;
        if let Some(profile) = &config.round_profile {
            // A realistic round: every kind of change at its share.
            for _ in 0..share(profile.new_deliveries) {
                add.push((s, 1, base(m + new_items)));
                new_items += 1;
            }
            let mut changed = |rng: &mut SplitMix, f: &mut dyn FnMut(usize, Row) -> Vec<Row>| {
                let i = pick(rng);
                let b = base(i);
                let after = f(i, b.clone());
                own.push((i, [vec![b], after]));
            };
            for k in 0..share(profile.site_moves) {
                changed(&mut rng, &mut |_, b| {
                    let mut after = b;
                    after.site = format!("Depot {}", 40 + k % 10);
                    vec![after]
                });
            }
            for _ in 0..share(profile.status_flips) {
                changed(&mut rng, &mut |_, b| {
                    let flipped = if b.status == InService {
                        InStorage
                    } else {
                        InService
                    };
                    vec![b.with_status(flipped, None)]
                });
            }
            for _ in 0..share(profile.gone) {
                changed(&mut rng, &mut |_, _| vec![]);
                bump(AlertKind::UnaccountedDisappearance);
            }
            if cross {
                for k in 0..share(profile.transfers) {
                    let t = other(k);
                    let tc = config.states[t];
                    changed(&mut rng, &mut |i, b| {
                        add.push((t, 1, respelled(&b, state, i, k as u64)));
                        vec![b.with_status(TransferredOut, Some(tc))]
                    });
                }
            }
            for k in 0..share(profile.disposals) {
                let status = if k % 2 == 0 { Expended } else { Destroyed };
                changed(&mut rng, &mut |_, b| vec![b.with_status(status, None)]);
            }
            for _ in 0..share(profile.lost) {
                changed(&mut rng, &mut |_, b| vec![b.with_status(Lost, None)]);
                bump(AlertKind::ReportedLost);
            }
            for k in 0..share(profile.respelled) {
                changed(&mut rng, &mut |i, b| {
                    vec![respelled(&b, state, i, k as u64).with_status(b.status, None)]
                });
            }
        }

        // Background changes that open nothing (without a round profile).
        let background = if config.round_profile.is_some() {
            0
        } else {
            changes.saturating_sub(own.len())
        };
        for k in 0..background {
            let r = rng.below(100);
            if r < 20 {
                // A new item, held.
                let i = m + new_items;
                new_items += 1;
                add.push((s, 1, base(i)));
                continue;
            }
            let i = pick(&mut rng);
            let b = base(i);
            let mut after = b.clone();
            match r {
                20..=59 => {
                    after.status = if b.status == InService {
                        InStorage
                    } else {
                        InService
                    }
                }
                60..=79 => after.site = format!("Depot {}", 40 + k % 10),
                80..=89 => {
                    after = b.with_status(if k % 2 == 0 { Expended } else { Destroyed }, None)
                }
                _ => after = respelled(&b, state, i, k as u64).with_status(b.status, None),
            }
            own.push((i, [vec![b], vec![after]]));
        }

        let plan = &mut plans[s];
        for (i, rounds) in own {
            plan.overrides.insert(i, rounds);
        }
        for (t, round, row) in add {
            plans[t].extra[round].push(row);
        }
    }
    let story = if config.story {
        plant_story(&config.states, &mut plans, &mut expected)
    } else {
        Vec::new()
    };
    Scenario {
        config: config.clone(),
        plans,
        expected,
        story,
    }
}

/// One launcher of the demo's story: what happened to it on the member
/// states' books, and how the ministry that seized it spelled its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoryCase {
    /// What the exports say happened to it, in a few words.
    pub what: &'static str,
    pub model: &'static str,
    /// The serial as the seizure report spells it.
    pub seized_serial: &'static str,
    /// The alert its exports open (besides `seized_item` once it is seized).
    pub planted: Option<AlertKind>,
}

/// A row of a story case: (state, round, serial as that state writes it,
/// status, counterparty, site).
type StoryRow = (
    &'static str,
    usize,
    &'static str,
    Status,
    Option<&'static str>,
    &'static str,
);

/// The story: seven MANPADS launchers (serials unlike the generated
/// `KA…` ones, so no key collides). Order-independent within a round, as the
/// rest of the scenario.
fn story_cases() -> Vec<(StoryCase, Vec<StoryRow>)> {
    use Status::*;
    vec![
        (
            StoryCase {
                what: "held by RUS (Latin serial) and by KAZ (same serial in Cyrillic)",
                model: "9P39",
                seized_serial: "KM-87-0412",
                planted: Some(AlertKind::HeldBySeveralStates),
            },
            vec![
                ("RUS", 1, "KM-87-0412", InService, None, "Depot 12"),
                ("RUS", 2, "KM-87-0412", InService, None, "Depot 12"),
                // Cyrillic К and М: the same key once folded.
                ("KAZ", 2, "КМ-87-0412", InStorage, None, "Depot 3"),
            ],
        ),
        (
            StoryCase {
                what: "reported lost by BLR",
                model: "9P39",
                seized_serial: "BC841170",
                planted: Some(AlertKind::ReportedLost),
            },
            vec![
                ("BLR", 1, "ВС-84-1170", InService, None, "Depot 21"),
                ("BLR", 2, "ВС-84-1170", Lost, None, "Depot 21"),
            ],
        ),
        (
            StoryCase {
                what: "vanished from ARM's books without a declaration",
                model: "9P516",
                seized_serial: "TP-91-0033",
                planted: Some(AlertKind::UnaccountedDisappearance),
            },
            vec![("ARM", 1, "TP-91-0033", InStorage, None, "Depot 5")],
        ),
        (
            StoryCase {
                what: "declared transferred by KGZ to TJK, never received",
                model: "9K38",
                seized_serial: "ом-90-2205",
                planted: Some(AlertKind::TransferNotReceived),
            },
            vec![
                ("KGZ", 1, "OM-90-2205", InService, None, "Depot 2"),
                (
                    "KGZ",
                    2,
                    "OM-90-2205",
                    TransferredOut,
                    Some("TJK"),
                    "Depot 2",
                ),
            ],
        ),
        (
            StoryCase {
                what: "declared destroyed by RUS",
                model: "9K310",
                seized_serial: "PK-86-0090",
                planted: None,
            },
            vec![("RUS", 1, "PK-86-0090", Destroyed, None, "Depot 30")],
        ),
        (
            StoryCase {
                what: "still on TJK's books, in service",
                model: "9P39",
                seized_serial: "AE-88-0761",
                planted: None,
            },
            vec![
                ("TJK", 1, "AE-88-0761", InService, None, "Depot 8"),
                ("TJK", 2, "AE-88-0761", InService, None, "Depot 8"),
            ],
        ),
        (
            StoryCase {
                what: "never on any member's books",
                model: "9P39",
                seized_serial: "XX-95-0001",
                planted: None,
            },
            vec![],
        ),
    ]
}

/// Adds the story's rows to the plans and its alerts to `expected`.
fn plant_story(
    states: &[StateCode],
    plans: &mut [StatePlan],
    expected: &mut BTreeMap<AlertKind, usize>,
) -> Vec<StoryCase> {
    let index = |code: &str| {
        states
            .iter()
            .position(|s| s.as_str() == code)
            .unwrap_or_else(|| panic!("the story needs state {code} in the scenario"))
    };
    let mut cases = Vec::new();
    for (case, rows) in story_cases() {
        for (state, round, serial, status, counterparty, site) in rows {
            let s = index(state);
            plans[s].extra[round - 1].push(Row {
                model: case.model.to_string(),
                serial: serial.to_string(),
                status,
                site: site.to_string(),
                counterparty: counterparty.map(|c| states[index(c)]),
            });
        }
        if let Some(kind) = case.planted {
            *expected.entry(kind).or_default() += 1;
        }
        cases.push(case);
    }
    cases
}

impl Scenario {
    pub fn config(&self) -> &ScenarioConfig {
        &self.config
    }

    pub fn states(&self) -> &[StateCode] {
        &self.config.states
    }

    /// The story's launchers (empty unless [`ScenarioConfig::story`]).
    pub(crate) fn story(&self) -> &[StoryCase] {
        &self.story
    }

    /// Open alerts per planted kind after round 1 and then round 2 of every
    /// state have been reconciled (grace 0). Kinds not listed: none open.
    pub fn expected(&self) -> &BTreeMap<AlertKind, usize> {
        &self.expected
    }

    /// The export of state number `state` (index into [`Scenario::states`])
    /// for `round` (1 or 2).
    pub fn csv(&self, state: usize, round: usize) -> String {
        assert!(round == 1 || round == 2, "rounds are 1 and 2");
        let r = round - 1;
        let code = self.config.states[state];
        let plan = &self.plans[state];
        let m = self.config.items_per_state;
        let mut out = String::with_capacity((m + plan.extra[r].len()) * 42 + 64);
        out.push_str(crate::inventory_csv::HEADER_LINE);
        out.push('\n');
        for i in 0..m {
            match plan.overrides.get(&i) {
                Some(rounds) => rounds[r].iter().for_each(|row| row.write_to(&mut out)),
                None => base_row(self.config.seed, state, code, i).write_to(&mut out),
            }
        }
        for row in &plan.extra[r] {
            row.write_to(&mut out);
        }
        out
    }

    /// Writes every export as `DIR/round1/RUS.csv`, `DIR/round2/RUS.csv`, …
    /// (one at a time: memory stays at one export) and the expected counts
    /// as `DIR/expected.txt` (`kind count` lines). Returns the paths, round 1
    /// first, states in order.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for round in [1, 2] {
            let sub = dir.join(format!("round{round}"));
            std::fs::create_dir_all(&sub)?;
            for (s, code) in self.config.states.iter().enumerate() {
                let path = sub.join(format!("{code}.csv"));
                std::fs::write(&path, self.csv(s, round))?;
                paths.push(path);
            }
        }
        let mut expected = String::new();
        for (kind, n) in &self.expected {
            let _ = writeln!(expected, "{kind} {n}");
        }
        std::fs::write(dir.join("expected.txt"), expected)?;
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory_csv::{ExportOptions, read_export};
    use crate::reconcile::{Engine, EngineConfig, ItemView, NoLines, SnapshotRef};
    use crate::serial::CanonicalRule;
    use crate::snapshot::{SnapshotDigest, build_snapshot, sort_items};
    use crate::state::StateSet;

    /// Feeds every export through the real parser and engine (grace 0):
    /// round 1 of every state, then round 2; returns open alerts per kind.
    fn reconcile(scenario: &Scenario) -> BTreeMap<AlertKind, usize> {
        let rule = CanonicalRule::default();
        let known = StateSet::members();
        let opts = ExportOptions::new(&rule, &known);
        let mut engine = Engine::new(EngineConfig {
            transfer_grace_ms: 0,
            ..Default::default()
        });
        let hour = 3_600_000;
        let start = 1_800_000_000_000;
        let mut previous = vec![SnapshotDigest::GENESIS; scenario.states().len()];
        for round in [1, 2] {
            let as_of = start + round as i64 * hour;
            for (s, &state) in scenario.states().iter().enumerate() {
                let csv = scenario.csv(s, round);
                let mut items = read_export(&format!("{state}-{round}.csv"), csv.as_bytes(), &opts)
                    .unwrap_or_else(|e| panic!("{state} round {round}: {e}"));
                sort_items(&mut items);
                let unsigned = build_snapshot(state, round as u64, as_of, previous[s], &items);
                let digest = unsigned.header.digest();
                previous[s] = digest;
                let reference = SnapshotRef {
                    state,
                    sequence: round as u64,
                    digest,
                    as_of_unix_ms: as_of,
                };
                let views = items.iter().map(|i| ItemView {
                    canonical_model: i.key.model.as_str(),
                    canonical_serial: i.key.serial.as_str(),
                    model: &i.model,
                    serial: &i.serial,
                    status: i.status,
                    site: &i.site,
                    counterparty: i.counterparty,
                });
                engine.apply_snapshot(reference, views, &NoLines, as_of + hour / 2);
            }
        }
        let mut counts: BTreeMap<AlertKind, usize> =
            PLANTED_KINDS.iter().map(|k| (*k, 0)).collect();
        for key in engine.open_alerts().keys() {
            *counts.entry(key.kind).or_default() += 1;
        }
        counts
    }

    #[test]
    fn scenario_alerts_are_exactly_the_planted_ones() {
        let mut config = ScenarioConfig::new(6, 2_000, 11);
        config.planted_per_kind = 6;
        let scenario = reconcile_scenario(&config);
        let expected = scenario.expected().clone();
        assert_eq!(expected[&AlertKind::DuplicateInSnapshot], 36);
        assert_eq!(expected[&AlertKind::DisposedItemReappears], 36);
        assert_eq!(reconcile(&scenario), expected);
    }

    #[test]
    fn story_adds_exactly_its_planted_alerts() {
        let mut config = ScenarioConfig::new(6, 1_000, 3);
        config.story = true;
        let scenario = reconcile_scenario(&config);
        assert_eq!(scenario.story().len(), 7);
        let mut plain = config.clone();
        plain.story = false;
        let without = reconcile_scenario(&plain);
        for kind in PLANTED_KINDS {
            let added = scenario
                .story()
                .iter()
                .filter(|c| c.planted == Some(kind))
                .count();
            assert_eq!(
                scenario.expected()[&kind],
                without.expected()[&kind] + added,
                "{kind}"
            );
        }
        assert_eq!(reconcile(&scenario), *scenario.expected());
    }

    #[test]
    fn scenario_with_one_state_plants_only_own_kinds() {
        let mut config = ScenarioConfig::new(1, 2_000, 5);
        config.planted_per_kind = 4;
        let scenario = reconcile_scenario(&config);
        assert_eq!(scenario.expected()[&AlertKind::HeldBySeveralStates], 0);
        assert_eq!(reconcile(&scenario), *scenario.expected());
    }

    #[test]
    fn scenario_is_deterministic_and_round_two_changes_about_the_asked_share() {
        let config = ScenarioConfig::new(3, 20_000, 9);
        let a = reconcile_scenario(&config);
        let b = reconcile_scenario(&config);
        for s in 0..3 {
            for round in [1, 2] {
                assert_eq!(a.csv(s, round), b.csv(s, round));
            }
            let one: BTreeSet<String> = a.csv(s, 1).lines().map(str::to_string).collect();
            let two: BTreeSet<String> = a.csv(s, 2).lines().map(str::to_string).collect();
            let changed = one.symmetric_difference(&two).count();
            // 1 % of 20,000 items, each change one or two lines.
            assert!((150..=600).contains(&changed), "{changed} lines differ");
        }
        let other = reconcile_scenario(&ScenarioConfig::new(3, 20_000, 10));
        assert_ne!(a.csv(0, 1), other.csv(0, 1));
    }

    /// The realistic round profile: about 30 % of each export's rows differ
    /// between rounds, and the engine finds exactly the planted alerts plus
    /// one per row gone and per item lost (transfers confirmed, disposals and
    /// moves quiet).
    #[test]
    fn a_realistic_round_changes_about_thirty_percent_and_opens_what_it_plants() {
        let mut config = ScenarioConfig::new(6, 4_000, 21);
        config.round_profile = Some(RoundProfile::realistic());
        let plain = reconcile_scenario(&ScenarioConfig::new(6, 4_000, 21));
        let scenario = reconcile_scenario(&config);
        // 2 % gone and 1 % lost of 4,000 items, for each of six states.
        assert_eq!(
            scenario.expected()[&AlertKind::UnaccountedDisappearance],
            plain.expected()[&AlertKind::UnaccountedDisappearance] + 6 * 80
        );
        assert_eq!(
            scenario.expected()[&AlertKind::ReportedLost],
            plain.expected()[&AlertKind::ReportedLost] + 6 * 40
        );
        assert_eq!(reconcile(&scenario), *scenario.expected());
        for s in 0..6 {
            let one: BTreeSet<String> = scenario.csv(s, 1).lines().map(str::to_string).collect();
            let two: BTreeSet<String> = scenario.csv(s, 2).lines().map(str::to_string).collect();
            let gone = one.difference(&two).count() as f64 / one.len() as f64;
            // 26.5 % changed in place plus planted cases; new rows come on top.
            assert!(
                (0.26..=0.33).contains(&gone),
                "{:.3} of the rows differ",
                gone
            );
        }
    }

    #[test]
    fn every_spelling_has_the_same_canonical_serial_and_model() {
        let rule = CanonicalRule::default();
        for state in MEMBER_STATES {
            for v in 0..SERIAL_SPELLINGS {
                let raw = spell_serial(state, 12_345, v);
                assert_eq!(
                    rule.canonicalize(&raw),
                    format!("KA{state}00012345"),
                    "{raw}"
                );
            }
        }
        for model in MODELS {
            for v in 0..4 {
                let raw = spell_model(model, v);
                assert_eq!(rule.canonicalize(&raw), rule.canonicalize(model), "{raw}");
            }
        }
    }
}
