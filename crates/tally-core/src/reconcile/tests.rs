//! Scenario tests: one or more per alert kind, through the public engine API.

use std::collections::BTreeMap;

use super::*;
use crate::item::Status::{self, *};
use crate::serial::{CanonicalRule, ItemKey};
use crate::snapshot::SnapshotDigest;
use crate::state::StateCode;

const HOUR: i64 = 3_600_000;

fn code(s: &str) -> StateCode {
    StateCode::parse(s).unwrap()
}

fn key(model: &str, serial: &str) -> ItemKey {
    crate::item::Item::new(
        model,
        serial,
        InService,
        "",
        None,
        &CanonicalRule::default(),
    )
    .unwrap()
    .key
}

/// Rows: (model, raw serial, status, counterparty).
type Row<'a> = (&'a str, &'a str, Status, Option<&'a str>);

struct World {
    engine: Engine,
    seq: BTreeMap<StateCode, u64>,
    now: i64,
}

impl World {
    fn new(grace: i64) -> World {
        World {
            engine: Engine::new(EngineConfig {
                transfer_grace_ms: grace,
                cadence_ms: BTreeMap::new(),
            }),
            seq: BTreeMap::new(),
            now: 1_000 * HOUR,
        }
    }

    fn submit(&mut self, state: &str, rows: &[Row<'_>]) -> Vec<AlertChange> {
        let st = code(state);
        let seq = self.seq.entry(st).or_insert(0);
        *seq += 1;
        let mut digest = [0u8; 32];
        digest[..3].copy_from_slice(state.as_bytes());
        digest[8..16].copy_from_slice(&seq.to_be_bytes());
        let snapshot = SnapshotRef {
            state: st,
            sequence: *seq,
            digest: SnapshotDigest(digest),
            as_of_unix_ms: self.now,
        };
        let rule = CanonicalRule::default();
        let items: Vec<crate::item::Item> = rows
            .iter()
            .map(|(m, s, status, cp)| {
                crate::item::Item::new(m, s, *status, "Depot", cp.map(code), &rule).unwrap()
            })
            .collect();
        let views = items.iter().map(|i| ItemView {
            canonical_model: i.key.model.as_str(),
            canonical_serial: i.key.serial.as_str(),
            model: &i.model,
            serial: &i.serial,
            status: i.status,
            site: &i.site,
            counterparty: i.counterparty,
        });
        self.engine
            .apply_snapshot(snapshot, views, &NoLines, self.now)
    }

    fn open(&self) -> Vec<String> {
        self.engine
            .open_alerts()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }
}

#[track_caller]
fn assert_open(w: &World, expected: &[&str]) {
    assert_eq!(w.open(), expected);
}

#[test]
fn one_serial_spelled_in_cyrillic_and_latin_by_two_states_is_held_twice() {
    let mut w = World::new(0);
    w.submit("RUS", &[("9K38", "ка-0 12", InService, None)]);
    let changes = w.submit("KAZ", &[("9k38", "KA012", InStorage, None)]);
    assert_open(&w, &["held_by_several_states 9K38/KA012"]);
    let AlertChange::Opened { body, .. } = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(body.states, [code("KAZ"), code("RUS")]);
}

#[test]
fn a_confirmed_transfer_does_not_alert() {
    let mut w = World::new(24 * HOUR);
    w.submit("RUS", &[("9P39", "P-1", InService, None)]);
    w.submit("RUS", &[("9P39", "P-1", TransferredOut, Some("KAZ"))]);
    w.submit("KAZ", &[("9P39", "P1", InService, None)]);
    w.now += 48 * HOUR;
    // RUS later drops the row entirely: the transfer was declared, not a disappearance.
    w.submit("RUS", &[]);
    assert!(w.engine.tick(&NoLines, w.now).is_empty());
    assert_open(&w, &[]);
}

#[test]
fn a_transfer_not_received_opens_after_the_grace_period_and_clears_on_receipt() {
    let mut w = World::new(24 * HOUR);
    w.submit("RUS", &[("9P39", "P-1", TransferredOut, Some("KAZ"))]);
    assert_open(&w, &[]);
    w.now += 23 * HOUR;
    assert!(w.engine.tick(&NoLines, w.now).is_empty());
    w.now += 2 * HOUR;
    let opened = w.engine.tick(&NoLines, w.now);
    assert_eq!(opened.len(), 1);
    assert_open(&w, &["transfer_not_received 9P39/P1 RUS -> KAZ"]);
    let cleared = w.submit("KAZ", &[("9P39", "P1", InService, None)]);
    match &cleared[..] {
        [AlertChange::Cleared { by: Some(by), .. }] => assert_eq!(by.state, code("KAZ")),
        other => panic!("{other:?}"),
    }
    assert_open(&w, &[]);
}

#[test]
fn a_destroyed_item_that_stays_destroyed_is_quiet_and_one_that_reappears_alerts() {
    let mut w = World::new(0);
    w.submit("ARM", &[("9M39", "M7", InStorage, None)]);
    w.submit("ARM", &[("9M39", "M7", Destroyed, None)]);
    w.submit("ARM", &[("9M39", "M7", Destroyed, None)]);
    w.submit("ARM", &[]);
    assert_open(&w, &[]);
    w.submit("TJK", &[("9M39", "м-7", InService, None)]);
    assert_open(&w, &["disposed_item_reappears 9M39/M7"]);
    w.submit("TJK", &[]);
    // TJK dropped it again without declaring: that is its own finding.
    assert_open(&w, &["unaccounted_disappearance 9M39/M7 TJK"]);
}

#[test]
fn a_vanished_item_is_unaccounted_then_an_undeclared_transfer_then_cleared() {
    let mut w = World::new(0);
    w.submit("BLR", &[("9K38", "A1", InService, None)]);
    w.submit("BLR", &[]);
    assert_open(&w, &["unaccounted_disappearance 9K38/A1 BLR"]);
    w.submit("KGZ", &[("9K38", "a-1", InService, None)]);
    assert_open(&w, &["undeclared_transfer 9K38/A1 BLR"]);
    // BLR corrects its books: it declares the transfer.
    let changes = w.submit("BLR", &[("9K38", "A1", TransferredOut, Some("KGZ"))]);
    assert_open(&w, &[]);
    assert!(changes.iter().any(|c| matches!(c, AlertChange::Cleared { by: Some(b), .. } if b.state == code("BLR") && b.sequence == 3)));
}

#[test]
fn reported_lost_stays_until_the_state_lists_it_otherwise() {
    let mut w = World::new(0);
    w.submit("KAZ", &[("AK-74M", "X 9", Lost, None)]);
    assert_open(&w, &["reported_lost AK74M/X9 KAZ"]);
    w.submit("KAZ", &[]);
    assert_open(&w, &["reported_lost AK74M/X9 KAZ"]);
    w.submit("KAZ", &[("AK-74M", "X9", InStorage, None)]);
    assert_open(&w, &[]);
}

#[test]
fn a_duplicate_clears_with_the_snapshot_that_removes_it() {
    let mut w = World::new(0);
    w.submit(
        "RUS",
        &[
            ("9K38", "KA-012", InService, None),
            ("9K38", "ка012", InStorage, None),
        ],
    );
    assert_open(&w, &["duplicate_in_snapshot 9K38/KA012 RUS"]);
    let changes = w.submit("RUS", &[("9K38", "KA-012", InService, None)]);
    match &changes[..] {
        [AlertChange::Cleared { by: Some(by), .. }] => assert_eq!(by.sequence, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn seized_items_carry_their_custody_trail() {
    let mut w = World::new(0);
    w.submit("RUS", &[("9P39", "L-55", InService, None)]);
    w.now += HOUR;
    w.submit("RUS", &[("9P39", "L-55", InStorage, None)]);
    w.now += HOUR;
    w.submit("RUS", &[]);
    let seizure = |serial: &str| Seizure {
        key: key("9P39", serial),
        model: "9P39".into(),
        serial: serial.into(),
        seized_at_unix_ms: w.now,
        place: "border".into(),
        note: String::new(),
    };
    let s1 = seizure("L55");
    let s2 = seizure("Z-1");
    w.engine.apply_seizure(s1, &NoLines, w.now);
    w.engine.apply_seizure(s2, &NoLines, w.now);
    let alerts = w.engine.open_alerts();
    let trail = |serial: &str| {
        alerts
            .iter()
            .find(|(k, _)| k.kind == AlertKind::SeizedItem && k.item == Some(key("9P39", serial)))
            .and_then(|(_, b)| b.custody.as_deref().cloned())
            .unwrap()
    };
    assert_eq!(trail("Z1"), Custody::NeverReported);
    match trail("L55") {
        Custody::Known {
            custodians,
            last_custodian,
            last_status,
            last_listed_in,
            last_held_in,
            gone_in,
            absent_since,
            declared_to,
            held_now_by,
        } => {
            assert_eq!(custodians, [code("RUS")]);
            assert_eq!(last_custodian, code("RUS"));
            assert_eq!(last_status, [InStorage]);
            assert_eq!(last_listed_in.sequence, 2);
            assert_eq!(last_held_in.unwrap().sequence, 2);
            assert_eq!(gone_in.unwrap().sequence, 3);
            assert_eq!(absent_since.unwrap().sequence, 3);
            assert!(declared_to.is_empty());
            assert!(held_now_by.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

/// Seizes `model serial` now and returns its alert's custody and body.
fn seize(w: &mut World, model: &str, serial: &str) -> (Custody, AlertBody) {
    let s = Seizure {
        key: key(model, serial),
        model: model.into(),
        serial: serial.into(),
        seized_at_unix_ms: w.now,
        place: "border".into(),
        note: String::new(),
    };
    w.engine.apply_seizure(s, &NoLines, w.now);
    seized_alert(w, model, serial)
}

fn seized_alert(w: &World, model: &str, serial: &str) -> (Custody, AlertBody) {
    let (_, body) = w
        .engine
        .open_alerts()
        .iter()
        .find(|(k, _)| k.kind == AlertKind::SeizedItem && k.item == Some(key(model, serial)))
        .expect("a seized alert");
    assert_eq!(
        Some(&w.engine.custody(&key(model, serial))),
        body.custody.as_deref()
    );
    (*body.custody.clone().unwrap(), body.clone())
}

/// (custodians, last status, held now by)
fn summary_of(c: &Custody) -> (Vec<String>, Vec<Status>, Vec<String>) {
    match c {
        Custody::Known {
            custodians,
            last_status,
            held_now_by,
            ..
        } => (
            custodians.iter().map(|s| s.to_string()).collect(),
            last_status.clone(),
            held_now_by.iter().map(|s| s.to_string()).collect(),
        ),
        Custody::NeverReported => panic!("never reported"),
    }
}

fn roles(body: &AlertBody) -> Vec<String> {
    body.evidence
        .iter()
        .map(|e| format!("{} #{}: {}", e.snapshot.state, e.snapshot.sequence, e.role))
        .collect()
}

#[test]
fn custody_declared_destroyed_by_one_state_and_held_by_another_in_the_same_round() {
    // The first case observed: TJK #1 destroyed; round 2, one as-of time for
    // all: ARM holds it, TJK still lists it destroyed.
    let mut w = World::new(0);
    w.submit("TJK", &[("AK-74M", "MA-200056", Destroyed, None)]);
    w.submit("ARM", &[]);
    w.now += HOUR;
    w.submit("ARM", &[("AK-74M", "MA-200056", InService, None)]);
    w.submit("TJK", &[("AK-74M", "MA-200056", Destroyed, None)]);
    let (custody, body) = seize(&mut w, "AK-74M", "MA-200056");
    assert_eq!(
        summary_of(&custody),
        (vec!["ARM".into()], vec![InService], vec!["ARM".into()])
    );
    assert_eq!(
        body.summary,
        "AK74M/MA200056 was seized; declared destroyed by TJK #1; held by ARM #2 (in_service)"
    );
    assert_eq!(
        roles(&body),
        ["TJK #1: declared destroyed", "ARM #2: last held"]
    );
    assert_eq!(body.states, [code("ARM"), code("TJK")]);
}

#[test]
fn custody_follows_a_confirmed_transfer_reported_at_the_same_time() {
    // The second case observed: RUS #1 holds; round 2 (one as-of): RUS
    // declares it transferred to ARM, ARM holds it.
    let mut w = World::new(0);
    w.submit("RUS", &[("9K310", "33714", InService, None)]);
    w.now += HOUR;
    w.submit("RUS", &[("9K310", "33714", TransferredOut, Some("ARM"))]);
    w.submit("ARM", &[("9K310", "33714", InService, None)]);
    let (custody, body) = seize(&mut w, "9K310", "33714");
    assert_eq!(
        summary_of(&custody),
        (vec!["ARM".into()], vec![InService], vec!["ARM".into()])
    );
    assert_eq!(
        body.summary,
        "9K310/33714 was seized; held by ARM #1 (in_service)"
    );
}

#[test]
fn custody_ties_name_every_holder_at_the_newest_as_of() {
    let mut w = World::new(0);
    w.submit("RUS", &[("9P39", "L1", InService, None)]);
    w.submit("KAZ", &[("9P39", "L1", InStorage, None)]);
    let (custody, body) = seize(&mut w, "9P39", "L1");
    assert_eq!(
        summary_of(&custody),
        (
            vec!["KAZ".into(), "RUS".into()],
            vec![InStorage],
            vec!["KAZ".into(), "RUS".into()]
        )
    );
    assert!(
        matches!(custody, Custody::Known { last_custodian, .. } if last_custodian == code("KAZ"))
    );
    assert_eq!(
        body.summary,
        "9P39/L1 was seized; held by KAZ #1 and RUS #1 (in_storage)"
    );
}

#[test]
fn custody_of_an_item_dropped_without_a_declaration_names_who_holds_it_now() {
    // BLR held it as of an earlier time; RUS held it later, then dropped it.
    let mut w = World::new(0);
    w.submit("BLR", &[("9P39", "L2", InService, None)]);
    w.now += HOUR;
    w.submit("RUS", &[("9P39", "L2", InService, None)]);
    w.now += HOUR;
    w.submit("RUS", &[]);
    let (custody, body) = seize(&mut w, "9P39", "L2");
    assert_eq!(
        summary_of(&custody),
        (vec!["RUS".into()], vec![InService], vec!["BLR".into()])
    );
    match &custody {
        Custody::Known { absent_since, .. } => assert_eq!(absent_since.unwrap().sequence, 2),
        Custody::NeverReported => unreachable!(),
    }
    assert_eq!(
        body.summary,
        "9P39/L2 was seized; last held by RUS #1 (in_service), dropped from RUS's books without a declaration in #2; now held by BLR"
    );
    assert_eq!(
        roles(&body),
        [
            "RUS #1: last held",
            "RUS #2: absent without a declaration",
            "BLR #1: holds"
        ]
    );
}

#[test]
fn custody_of_a_lost_item_and_of_a_transfer_never_received() {
    let mut w = World::new(0);
    w.submit(
        "KGZ",
        &[
            ("9P39", "L3", InService, None),
            ("9P39", "L4", InService, None),
        ],
    );
    w.submit("ARM", &[]);
    w.now += HOUR;
    w.submit(
        "KGZ",
        &[
            ("9P39", "L3", Lost, None),
            ("9P39", "L4", TransferredOut, Some("ARM")),
        ],
    );
    w.submit("ARM", &[]);
    let (custody, body) = seize(&mut w, "9P39", "L3");
    assert_eq!(
        summary_of(&custody),
        (vec!["KGZ".into()], vec![Lost], vec![])
    );
    assert_eq!(
        body.summary,
        "9P39/L3 was seized; last held by KGZ #1, reported lost in #2"
    );
    assert_eq!(roles(&body), ["KGZ #1: last held", "KGZ #2: declared lost"]);
    let (custody, body) = seize(&mut w, "9P39", "L4");
    assert_eq!(
        summary_of(&custody),
        (vec!["KGZ".into()], vec![TransferredOut], vec![])
    );
    assert!(
        matches!(&custody, Custody::Known { declared_to, .. } if *declared_to == [code("ARM")])
    );
    assert_eq!(
        body.summary,
        "9P39/L4 was seized; last held by KGZ #1, declared transferred to ARM in #2 and never received"
    );
}

#[test]
fn custody_of_an_item_never_held_and_of_one_never_reported() {
    let mut w = World::new(0);
    w.submit("TJK", &[("9P39", "L5", Destroyed, None)]);
    let (custody, body) = seize(&mut w, "9P39", "L5");
    assert_eq!(
        summary_of(&custody),
        (vec!["TJK".into()], vec![Destroyed], vec![])
    );
    assert!(matches!(
        custody,
        Custody::Known {
            last_held_in: None,
            ..
        }
    ));
    assert_eq!(
        body.summary,
        "9P39/L5 was seized; never listed as held by any member; last listed by TJK #1 as destroyed"
    );
    let (custody, body) = seize(&mut w, "9P39", "NOPE");
    assert_eq!(custody, Custody::NeverReported);
    assert_eq!(
        body.summary,
        "9P39/NOPE was seized; no member ever reported it"
    );
}

#[test]
fn a_seized_item_listed_as_held_after_the_seizure_updates_its_alert_naming_the_snapshot() {
    let mut w = World::new(0);
    w.submit("RUS", &[("9P39", "L6", InService, None)]);
    w.now += HOUR;
    seize(&mut w, "9P39", "L6");
    w.now += HOUR;
    let changes = w.submit("RUS", &[("9P39", "L6", InService, None)]);
    let updated: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            AlertChange::Updated { key, by, .. } if key.kind == AlertKind::SeizedItem => Some(*by),
            _ => None,
        })
        .collect();
    assert_eq!(updated.len(), 1, "{changes:?}");
    assert_eq!(
        updated[0].map(|r| (r.state, r.sequence)),
        Some((code("RUS"), 2))
    );
    let (_, body) = seized_alert(&w, "9P39", "L6");
    assert_eq!(
        body.summary,
        "9P39/L6 was seized; held by RUS #2 (in_service); listed as held after it was seized by RUS"
    );
    assert_eq!(
        roles(&body),
        [
            "RUS #2: last held",
            "RUS #2: listed as held after it was seized"
        ]
    );
}

#[test]
fn custody_moves_to_a_state_that_reports_the_item_later_without_a_change_of_its_own() {
    // KAZ lists the key unchanged in its second snapshot; the seized alert's
    // custody still moves, since custody depends on as-of times.
    let mut w = World::new(0);
    w.submit("KAZ", &[("9P39", "L7", InService, None)]);
    w.now += HOUR;
    w.submit("RUS", &[("9P39", "L7", InService, None)]);
    let (custody, _) = seize(&mut w, "9P39", "L7");
    assert_eq!(summary_of(&custody).0, ["RUS"]);
    w.now += HOUR;
    w.submit("KAZ", &[("9P39", "L7", InService, None)]);
    let (custody, _) = seized_alert(&w, "9P39", "L7");
    assert_eq!(summary_of(&custody).0, ["KAZ"]);
}

#[test]
fn equivocations_alert_once_per_state_and_sequence() {
    let mut w = World::new(0);
    let e = EquivocationRef {
        state: code("TJK"),
        sequence: 4,
        submitted: SnapshotDigest([1; 32]),
        conflicts_with: SnapshotDigest([2; 32]),
    };
    assert_eq!(w.engine.apply_equivocation(&e).len(), 1);
    assert!(w.engine.apply_equivocation(&e).is_empty());
    assert_open(&w, &["conflicting_submission TJK #4"]);
}

#[test]
fn overdue_opens_with_the_clock_and_clears_with_the_next_snapshot() {
    let mut w = World::new(0);
    w.engine = Engine::new(EngineConfig {
        transfer_grace_ms: 0,
        cadence_ms: [(code("KGZ"), 24 * HOUR)].into_iter().collect(),
    });
    w.submit("KGZ", &[]);
    w.now += 24 * HOUR;
    assert!(w.engine.tick(&NoLines, w.now).is_empty());
    w.now += 1;
    assert_eq!(w.engine.tick(&NoLines, w.now).len(), 1);
    assert_open(&w, &["snapshot_overdue KGZ"]);
    w.submit("KGZ", &[]);
    assert_open(&w, &[]);
}

#[test]
fn the_same_inventory_again_changes_nothing() {
    let mut w = World::new(0);
    let rows = [
        ("9K38", "A1", InService, None),
        ("9K38", "A1", InService, None),
        ("9M39", "B", Lost, None),
        ("9P39", "C", TransferredOut, Some("KAZ")),
    ];
    w.submit("RUS", &rows);
    let before = w.engine.open_alerts().clone();
    assert!(w.submit("RUS", &rows).is_empty());
    assert_eq!(w.engine.open_alerts(), &before);
}

#[test]
fn a_condition_that_returns_is_opened_again() {
    let mut w = World::new(0);
    w.submit("RUS", &[("9K38", "A1", InService, None)]);
    w.submit("KAZ", &[("9K38", "A1", InService, None)]);
    w.submit("KAZ", &[("9K38", "A1", TransferredOut, Some("RUS"))]);
    assert_open(&w, &[]);
    let changes = w.submit("KAZ", &[("9K38", "A1", InService, None)]);
    assert!(
        matches!(&changes[..], [AlertChange::Opened { .. }]),
        "{changes:?}"
    );
}

/// An engine with every kind of record: holdings, a vanished key, a
/// transfer with a deadline, a disposal, a lost key, a seizure.
fn busy_world() -> World {
    let mut w = World::new(HOUR);
    w.submit(
        "RUS",
        &[
            ("9K38", "A1", InService, None),
            ("9K38", "A1", InService, None),
            ("9K38", "A2", InService, None),
            ("9P39", "C", TransferredOut, Some("KAZ")),
            ("9M39", "D", Destroyed, None),
        ],
    );
    w.submit(
        "KAZ",
        &[
            ("9K38", "A2", InStorage, None),
            ("9M39", "D", InService, None),
        ],
    );
    w.submit(
        "RUS",
        &[("9K38", "A1", InService, None), ("9M39", "L", Lost, None)],
    );
    w.engine.apply_seizure(
        Seizure {
            key: key("9K38", "Z9"),
            model: "9K38".into(),
            serial: "Z9".into(),
            seized_at_unix_ms: w.now,
            place: "border".into(),
            note: String::new(),
        },
        &NoLines,
        w.now,
    );
    w
}

fn checkpoint_bytes(engine: &Engine) -> Vec<u8> {
    let mut out = Vec::new();
    engine
        .write_checkpoint(serde_json::json!({"n": 1}), &mut out)
        .unwrap();
    out
}

#[test]
fn a_checkpoint_reads_back_to_the_same_engine() {
    let w = busy_world();
    let bytes = checkpoint_bytes(&w.engine);
    let (restored, extra) = Engine::read_checkpoint(w.engine.config(), &bytes[..]).unwrap();
    assert_eq!(extra, serde_json::json!({"n": 1}));
    assert_eq!(restored.open_alerts(), w.engine.open_alerts());
    assert!(!restored.open_alerts().is_empty());
    assert_eq!(restored.key_count(), w.engine.key_count());
    assert_eq!(
        restored.custody(&key("9K38", "A2")),
        w.engine.custody(&key("9K38", "A2"))
    );
    assert_eq!(checkpoint_bytes(&restored), bytes);
}

#[test]
fn every_damaged_or_truncated_checkpoint_is_refused() {
    let w = busy_world();
    let bytes = checkpoint_bytes(&w.engine);
    let config = w.engine.config();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut damaged = bytes.clone();
            damaged[i] ^= bit;
            assert!(
                Engine::read_checkpoint(config, &damaged[..]).is_err(),
                "byte {i} bit {bit:#x} flipped, still read"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(
            Engine::read_checkpoint(config, &bytes[..len]).is_err(),
            "truncated to {len} bytes, still read"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    // Trailing bytes after the checksum are not read: the reader stops there.
    assert!(Engine::read_checkpoint(config, &longer[..]).is_ok());
}

#[test]
fn a_checkpoint_says_why_it_is_refused() {
    let w = busy_world();
    let bytes = checkpoint_bytes(&w.engine);
    let other = EngineConfig {
        transfer_grace_ms: 2 * HOUR,
        cadence_ms: BTreeMap::new(),
    };
    assert!(matches!(
        Engine::read_checkpoint(&other, &bytes[..]),
        Err(CheckpointError::ConfigChanged)
    ));
    let mut damaged = bytes.clone();
    damaged[0] = b'X';
    assert!(matches!(
        Engine::read_checkpoint(w.engine.config(), &damaged[..]),
        Err(CheckpointError::NotACheckpoint)
    ));
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(CHECKPOINT_FORMAT_VERSION + 1).to_le_bytes());
    let refused = Engine::read_checkpoint(w.engine.config(), &newer[..]);
    assert!(
        matches!(refused, Err(CheckpointError::Version { found }) if found == CHECKPOINT_FORMAT_VERSION + 1)
    );
    // Another program version (same length, checksum recomputed).
    let writer = format!("\"tally {}\"", env!("CARGO_PKG_VERSION"));
    let other = format!("\"tally {}\"", "9".repeat(env!("CARGO_PKG_VERSION").len()));
    let at = bytes
        .windows(writer.len())
        .position(|w| w == writer.as_bytes())
        .unwrap();
    let mut older = bytes.clone();
    older[at..at + other.len()].copy_from_slice(other.as_bytes());
    let body = older.len() - 32;
    let sum = {
        use sha2::Digest;
        sha2::Sha256::digest(&older[..body])
    };
    older[body..].copy_from_slice(&sum);
    match Engine::read_checkpoint(w.engine.config(), &older[..]) {
        Err(e @ CheckpointError::OtherWriter(_)) => assert!(e.to_string().contains("written by")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a checkpoint of another version was accepted"),
    }
    let last = bytes.len() - 1;
    let mut damaged = bytes.clone();
    damaged[last] ^= 1;
    match Engine::read_checkpoint(w.engine.config(), &damaged[..]) {
        Err(e @ CheckpointError::Checksum) => assert!(e.to_string().contains("damaged")),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a damaged checksum was accepted"),
    }
}
