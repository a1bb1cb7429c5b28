//! Reconciliation through the real coordinator: alerts are recorded with
//! evidence read back from stored snapshots, survive restarts without new
//! events, and a snapshot accepted but not yet reconciled (a crash in
//! between) is reconciled at start-up.

use std::sync::Arc;

use tally::alerts::{AlertStatus, EventKind};
use tally::ingest::{Admission, Ingestor};
use tally::item::Status::*;
use tally::reconcile::AlertKind;
use tally::snapshot::SnapshotDigest;
use tally::store::{SledStore, SnapshotStore};

use crate::common::*;

fn alerts(coord: &TestCoordinator) -> Arc<tally::alerts::AlertStore> {
    coord.reconciler.as_ref().expect("running").alerts().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_carry_evidence_from_stored_snapshots_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut client = coord.client().await;
    let rus = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "ка-0 12", InService, None),
            ("9M39", "M1", InStorage, None),
        ]),
    );
    submit(&mut client, &rus).await.unwrap();
    let kaz = snapshot(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "KA012", InStorage, None)]),
    );
    submit(&mut client, &kaz).await.unwrap();

    let store = alerts(&coord);
    let current = store.current_alerts().unwrap();
    assert_eq!(current.len(), 1, "{current:#?}");
    let alert = &current[0];
    assert_eq!(alert.key.kind, AlertKind::HeldBySeveralStates);
    assert_eq!(alert.status, AlertStatus::Open);
    assert_eq!(alert.body.states, [state("KAZ"), state("RUS")]);
    assert_eq!(alert.body.spellings, ["KA012", "ка-0 12"]);
    assert_eq!(alert.body.evidence.len(), 2);
    for e in &alert.body.evidence {
        assert_eq!(e.lines.len(), 1, "one line per holder: {e:?}");
    }
    let events = store.events_after(0, 100).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Opened);
    let last_cursor = store.last_cursor();
    drop(store); // it holds the database open
    coord.stop().await;

    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let store = alerts(&coord);
    assert_eq!(
        store.current_alerts().unwrap(),
        current,
        "same alerts after restart"
    );
    assert_eq!(
        store.last_cursor(),
        last_cursor,
        "a restart records no events"
    );

    // KAZ hands it back: the alert clears, naming KAZ's snapshot.
    let kaz2 = snapshot(
        "KAZ",
        2,
        kaz.digest(),
        &items(&[("9K38", "KA012", TransferredOut, Some("RUS"))]),
    );
    submit(&mut coord.client().await, &kaz2).await.unwrap();
    assert!(store.current_alerts().unwrap().is_empty());
    let cleared = store.get(alert.id).unwrap().unwrap();
    assert_eq!(cleared.status, AlertStatus::Cleared);
    let last = cleared.history.last().unwrap();
    assert_eq!(last.action, EventKind::Cleared);
    assert_eq!(
        last.by.map(|b| (b.state, b.sequence)),
        Some((state("KAZ"), 2))
    );
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_accepted_but_not_reconciled_before_a_crash_is_reconciled_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["ARM"]).await;
    let first = snapshot(
        "ARM",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9P39", "P1", InService, None)]),
    );
    submit(&mut coord.client().await, &first).await.unwrap();
    assert!(alerts(&coord).current_alerts().unwrap().is_empty());
    coord.stop().await;

    // Accept a second snapshot with the ingestor alone: what a crash right
    // after the commit and before reconciliation leaves behind.
    {
        let store: Arc<dyn SnapshotStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let ingestor = Ingestor::new(
            store,
            [(state("ARM"), state_key("ARM").verifying_key())],
            coordinator_key(),
            Default::default(),
            Default::default(),
        );
        let second = snapshot("ARM", 2, first.digest(), &[]);
        let Ok(Admission::New(mut upload)) = ingestor.admit(second.signed.clone()) else {
            panic!("admitted");
        };
        for c in &second.chunks {
            upload.push_chunk(c).unwrap();
        }
        upload.finish().unwrap();
    }

    let coord = TestCoordinator::start(dir.path(), &["ARM"]).await;
    let current = alerts(&coord).current_alerts().unwrap();
    let kinds: Vec<AlertKind> = current.iter().map(|a| a.key.kind).collect();
    assert_eq!(kinds, [AlertKind::UnaccountedDisappearance]);
    let events = alerts(&coord).events_after(0, 10).unwrap();
    assert_eq!(events.len(), 1, "the missed change is recorded once");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocation_becomes_a_conflicting_submission_alert() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["TJK"]).await;
    let mut client = coord.client().await;
    let a = snapshot("TJK", 1, SnapshotDigest::GENESIS, &many_items(3));
    submit(&mut client, &a).await.unwrap();
    let b = snapshot("TJK", 1, SnapshotDigest::GENESIS, &many_items(4));
    assert!(submit(&mut client, &b).await.is_err());
    // The next accepted submission (or the clock) reconciles the record.
    let c = snapshot("TJK", 2, a.digest(), &many_items(3));
    submit(&mut client, &c).await.unwrap();
    let current = alerts(&coord).current_alerts().unwrap();
    assert!(
        current
            .iter()
            .any(|al| al.key.kind == AlertKind::ConflictingSubmission && al.key.sequence == Some(1)),
        "{current:#?}"
    );
    coord.stop().await;
}

/// Equivocation records are listed by state and sequence, not by arrival: a
/// later record that sorts first must still be reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocation_that_sorts_before_an_earlier_one_is_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["ARM", "TJK"]).await;
    let mut client = coord.client().await;
    for st in ["TJK", "ARM"] {
        let a = snapshot(st, 1, SnapshotDigest::GENESIS, &many_items(3));
        submit(&mut client, &a).await.unwrap();
        let b = snapshot(st, 1, SnapshotDigest::GENESIS, &many_items(4));
        assert!(submit(&mut client, &b).await.is_err());
        let c = snapshot(st, 2, a.digest(), &many_items(3));
        submit(&mut client, &c).await.unwrap();
    }
    let conflicting: Vec<String> = alerts(&coord)
        .current_alerts()
        .unwrap()
        .iter()
        .filter(|al| al.key.kind == AlertKind::ConflictingSubmission)
        .filter_map(|al| al.key.state.map(|s| s.to_string()))
        .collect();
    assert_eq!(conflicting, ["ARM", "TJK"]);
    coord.stop().await;
}
