//! Reconciliation through the real coordinator: alerts are recorded with
//! evidence read back from stored snapshots, survive restarts without new
//! events, and a snapshot accepted but not yet reconciled (a crash in
//! between) is reconciled at start-up.

use std::sync::Arc;

use tally::coordinator::admission::{Admission, Ingestor};
use tally::coordinator::reconciler::Reconciler;
use tally::coordinator::storage::alerts::{AlertStatus, AlertStore, EventKind};
use tally::coordinator::storage::{
    ChunkIter, Equivocation, NewSnapshot, SledStore, SnapshotStore, StoreError, StoredSnapshot,
    UploadId,
};
use tally::coordinator::storage::{SeizureStore, SledSeizureStore};
use tally::item::Status::*;
use tally::merkle::BlockRoots;
use tally::reconcile::{AlertKind, EngineConfig};
use tally::snapshot::{Receipt, SignedHeader, SnapshotDigest};
use tally::state::StateCode;

use crate::common::*;

fn alerts(coord: &TestCoordinator) -> Arc<tally::coordinator::storage::alerts::AlertStore> {
    coord.reconciler.as_ref().expect("running").alerts().clone()
}

fn started_from_checkpoint(coord: &TestCoordinator) -> bool {
    coord
        .reconciler
        .as_ref()
        .expect("running")
        .started_from_checkpoint()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_checkpoint_equals_a_full_rebuild_and_a_damaged_one_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir
        .path()
        .join(tally::coordinator::reconciler::CHECKPOINT_FILE);
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    assert!(!started_from_checkpoint(&coord), "a new store has none");
    let mut client = coord.client().await;
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "A1", InService, None),
            ("9M39", "B-2", InStorage, None),
        ]),
    );
    submit(&mut client, &rus1).await.unwrap();
    let kaz1 = snapshot(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "a1", InService, None)]),
    );
    submit(&mut client, &kaz1).await.unwrap();
    coord.stop().await;
    assert!(checkpoint.exists(), "written at the clean stop");

    // From the checkpoint: an alert opened now takes its evidence from a
    // snapshot reconciled before the restart (its index is read back).
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    assert!(started_from_checkpoint(&coord));
    let rus2 = snapshot(
        "RUS",
        2,
        rus1.digest(),
        &items(&[("9K38", "A1", InService, None)]),
    );
    submit(&mut coord.client().await, &rus2).await.unwrap();
    let current = alerts(&coord).current_alerts().unwrap();
    let kinds: Vec<AlertKind> = current.iter().map(|a| a.key.kind).collect();
    assert_eq!(
        kinds,
        [
            AlertKind::HeldBySeveralStates,
            AlertKind::UnaccountedDisappearance
        ]
    );
    let vanished = &current[1];
    let last_held = &vanished.body.evidence[0];
    assert_eq!(last_held.snapshot.sequence, 1);
    assert_eq!(last_held.lines.len(), 1, "{vanished:#?}");
    assert_eq!(last_held.lines[0].serial, "B-2");
    let cursor = alerts(&coord).last_cursor();
    coord.stop().await;

    // A damaged checkpoint is not used: start-up replays every snapshot and
    // arrives at the same alerts, recording nothing.
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&checkpoint, &bytes).unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    assert!(!started_from_checkpoint(&coord));
    assert_eq!(alerts(&coord).current_alerts().unwrap(), current);
    assert_eq!(alerts(&coord).last_cursor(), cursor);
    coord.stop().await;

    // Nor is the checkpoint of another store, whose RUS sequence 1 is a
    // different snapshot.
    let other = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(other.path(), &["RUS", "KAZ"]).await;
    let alien = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "Z9", InService, None)]),
    );
    submit(&mut coord.client().await, &alien).await.unwrap();
    coord.stop().await;
    std::fs::copy(
        other
            .path()
            .join(tally::coordinator::reconciler::CHECKPOINT_FILE),
        &checkpoint,
    )
    .unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    assert!(!started_from_checkpoint(&coord));
    assert_eq!(alerts(&coord).current_alerts().unwrap(), current);
    assert_eq!(alerts(&coord).last_cursor(), cursor);
    coord.stop().await;
}

/// An operator reports launcher 9M39/B2 seized.
fn report_seizure_of_b2(
    coord: &TestCoordinator,
) -> tally::coordinator::storage::seizures::SeizureReport {
    report_seizure_of_b2_at(coord, tally::support::clock::system_now_unix_ms())
}

/// The same, with the coordinator's clock reading `now_unix_ms`.
fn report_seizure_of_b2_at(
    coord: &TestCoordinator,
    now_unix_ms: i64,
) -> tally::coordinator::storage::seizures::SeizureReport {
    let key = items(&[("9M39", "B2", Lost, None)])[0].key.clone();
    coord
        .reconciler
        .as_ref()
        .expect("running")
        .report_seizures(
            vec![tally::reconcile::Seizure {
                key,
                model: "9M39".into(),
                serial: "B2".into(),
                seized_at_unix_ms: 1_790_000_500_000,
                place: "border post".into(),
                note: String::new(),
            }],
            now_unix_ms,
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rebuild_replays_seizure_reports_where_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let mut client = coord.client().await;
    let lost = [("9M39", "B2", Lost, None)];
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &items(&lost));
    submit(&mut client, &rus1).await.unwrap();
    report_seizure_of_b2(&coord);
    // Accepted after the report (in the same millisecond, as likely as not);
    // the key's row is as it was, so nothing about the key is re-evaluated
    // and its alerts keep their evidence.
    let rus2 = snapshot("RUS", 2, rus1.digest(), &items(&lost));
    submit(&mut client, &rus2).await.unwrap();
    restart_with_a_full_rebuild(coord, dir.path(), &["RUS"])
        .await
        .stop()
        .await;
}

/// Stops the coordinator, removes its checkpoint and starts it again: the
/// full rebuild arrives at the same alerts, bodies included (no event).
async fn restart_with_a_full_rebuild(
    coord: TestCoordinator,
    dir: &std::path::Path,
    states: &[&str],
) -> TestCoordinator {
    let current = alerts(&coord).current_alerts().unwrap();
    let cursor = alerts(&coord).last_cursor();
    coord.stop().await;
    std::fs::remove_file(dir.join(tally::coordinator::reconciler::CHECKPOINT_FILE)).unwrap();
    let coord = TestCoordinator::start(dir, states).await;
    assert!(!started_from_checkpoint(&coord));
    assert_eq!(alerts(&coord).current_alerts().unwrap(), current);
    assert_eq!(
        alerts(&coord).last_cursor(),
        cursor,
        "the rebuild arrives at the same bodies: no event"
    );
    coord
}

/// Seizure reports keep their place among acceptances in a rebuild and
/// across restarts, whatever the clock read when they were made: behind the
/// latest acceptance time (a clock stepped back, or acceptance times run
/// ahead in a burst) or ahead of the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seizure_reports_keep_their_place_among_acceptances_whatever_the_clock_reads() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let mut client = coord.client().await;
    let lost = [("9M39", "B2", Lost, None)];
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &items(&lost));
    let first = submit(&mut client, &rus1).await.unwrap();
    let behind = report_seizure_of_b2_at(&coord, first.accepted_at_unix_ms - 60_000);
    assert_eq!(behind.reported_at_unix_ms, first.accepted_at_unix_ms + 1);
    let rus2 = snapshot("RUS", 2, rus1.digest(), &items(&lost));
    let second = submit(&mut client, &rus2).await.unwrap();
    assert!(second.accepted_at_unix_ms > behind.reported_at_unix_ms);
    // Ahead: the next snapshot, accepted after the report, gets a later
    // time. Its row for the key is as before, so live the report's evidence
    // stays with sequence 2; a rebuild that put sequence 3 first would
    // give sequence 3.
    let ahead = report_seizure_of_b2_at(&coord, second.accepted_at_unix_ms + 60_000);
    assert_eq!(
        ahead.reported_at_unix_ms,
        second.accepted_at_unix_ms + 60_000
    );
    let rus3 = snapshot("RUS", 3, rus2.digest(), &items(&lost));
    let third = submit(&mut client, &rus3).await.unwrap();
    assert!(third.accepted_at_unix_ms > ahead.reported_at_unix_ms);
    let coord = restart_with_a_full_rebuild(coord, dir.path(), &["RUS"]).await;
    // A report stamped an hour ahead, then a restart: the next acceptance
    // still comes after it.
    let future = report_seizure_of_b2_at(&coord, third.accepted_at_unix_ms + 3_600_000);
    coord.stop().await;
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let rus4 = snapshot("RUS", 4, rus3.digest(), &items(&lost));
    let fourth = submit(&mut coord.client().await, &rus4).await.unwrap();
    assert!(fourth.accepted_at_unix_ms > future.reported_at_unix_ms);
    coord.stop().await;
}

/// A store put back from an older backup, next to a newer checkpoint that
/// counts a seizure report the backup does not hold: the checkpoint is not
/// used (its snapshots alone would have matched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_newer_than_the_store_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let coord = TestCoordinator::start(&data, &["RUS"]).await;
    let lost = [("9M39", "B2", Lost, None)];
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &items(&lost));
    submit(&mut coord.client().await, &rus1).await.unwrap();
    coord.stop().await;
    let backup = dir.path().join("backup");
    copy_dir(&data, &backup);

    let coord = TestCoordinator::start(&data, &["RUS"]).await;
    report_seizure_of_b2(&coord);
    coord.stop().await;

    let restored = dir.path().join("restored");
    copy_dir(&backup, &restored);
    std::fs::copy(
        data.join(tally::coordinator::reconciler::CHECKPOINT_FILE),
        restored.join(tally::coordinator::reconciler::CHECKPOINT_FILE),
    )
    .unwrap();
    let coord = TestCoordinator::start(&restored, &["RUS"]).await;
    assert!(!started_from_checkpoint(&coord));
    let kinds: Vec<AlertKind> = alerts(&coord)
        .current_alerts()
        .unwrap()
        .iter()
        .map(|a| a.key.kind)
        .collect();
    assert_eq!(kinds, [AlertKind::ReportedLost], "no seizure in this store");
    coord.stop().await;
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
    assert!(
        started_from_checkpoint(&coord),
        "a clean stop leaves a checkpoint"
    );
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
        let store: Arc<dyn SnapshotStore> = Arc::new(open_store(dir.path()));
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
    assert!(
        started_from_checkpoint(&coord),
        "the checkpoint of the first run is a valid start: only sequence 2 is replayed"
    );
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
    let refused = submit(&mut client, &b).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    // Raised when the refusal is answered, not when the next snapshot is
    // accepted: the answer comes after the reconciliation.
    let conflicting = |coord: &TestCoordinator| {
        alerts(coord)
            .current_alerts()
            .unwrap()
            .iter()
            .filter(|al| al.key.kind == AlertKind::ConflictingSubmission)
            .map(|al| (al.key.state.map(|s| s.to_string()), al.key.sequence))
            .collect::<Vec<_>>()
    };
    assert_eq!(conflicting(&coord), [(Some("TJK".to_string()), Some(1))]);
    // A fork (sequence 2 naming a previous digest that is not the chain's)
    // is raised the same way.
    let fork = snapshot("TJK", 2, b.digest(), &many_items(5));
    let refused = submit(&mut client, &fork).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        conflicting(&coord),
        [
            (Some("TJK".to_string()), Some(1)),
            (Some("TJK".to_string()), Some(2))
        ]
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
        let refused = submit(&mut client, &b).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
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

#[test]
fn acceptance_times_strictly_increase_in_commit_order_even_when_the_clock_stands_still() {
    let dir = tempfile::tempdir().unwrap();
    let members = ["RUS", "KAZ"].map(|s| (state(s), state_key(s).verifying_key()));
    let accept = |ingestor: &Ingestor, s: &TestSnapshot| {
        let Ok(Admission::New(mut upload)) = ingestor.admit(s.signed.clone()) else {
            panic!("admitted");
        };
        for c in &s.chunks {
            upload.push_chunk(c).unwrap();
        }
        upload.finish().unwrap().receipt().accepted_at_unix_ms
    };
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &[]);
    let kaz1 = snapshot("KAZ", 1, SnapshotDigest::GENESIS, &[]);
    let rus2 = snapshot("RUS", 2, rus1.digest(), &[]);
    {
        let store: Arc<dyn SnapshotStore> = Arc::new(open_store(dir.path()));
        let frozen = Ingestor::with_clock(
            store,
            members,
            coordinator_key(),
            Default::default(),
            Default::default(),
            tally::support::clock::Clock::manual(5_000).0,
        );
        assert_eq!(accept(&frozen, &rus1), 5_000);
        assert_eq!(accept(&frozen, &kaz1), 5_001);
    }
    // A new process whose clock is behind what the store holds goes on
    // after the latest acceptance time.
    let store: Arc<dyn SnapshotStore> = Arc::new(open_store(dir.path()));
    let behind = Ingestor::with_clock(
        store,
        members,
        coordinator_key(),
        Default::default(),
        Default::default(),
        tally::support::clock::Clock::manual(4_000).0,
    );
    assert_eq!(accept(&behind, &rus2), 5_002);
}

/// A store that misbehaves on cue, deterministically: `racing` is committed
/// right after the store issues a time to a seizure report (a commit racing
/// the report); reading the chunks of `fail_chunks_of` fails once.
struct RiggedStore {
    inner: SledStore,
    racing: std::sync::Mutex<Option<NewSnapshot>>,
    fail_chunks_of: std::sync::Mutex<Option<(StateCode, u64)>>,
}

impl RiggedStore {
    fn new(inner: SledStore) -> RiggedStore {
        RiggedStore {
            inner,
            racing: std::sync::Mutex::new(None),
            fail_chunks_of: std::sync::Mutex::new(None),
        }
    }
}

impl SnapshotStore for RiggedStore {
    fn issue_time(&self, not_before: i64) -> Result<i64, StoreError> {
        let issued = self.inner.issue_time(not_before)?;
        if let Some(new) = self.racing.lock().unwrap().take() {
            commit_prepared(&self.inner, new);
        }
        Ok(issued)
    }
    fn latest(&self, state: StateCode) -> Result<Option<StoredSnapshot>, StoreError> {
        self.inner.latest(state)
    }
    fn get(&self, state: StateCode, sequence: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        self.inner.get(state, sequence)
    }
    fn list(
        &self,
        state: StateCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredSnapshot>, StoreError> {
        self.inner.list(state, from, limit)
    }
    fn states(&self) -> Result<Vec<StateCode>, StoreError> {
        self.inner.states()
    }
    fn begin_upload(&self) -> Result<UploadId, StoreError> {
        self.inner.begin_upload()
    }
    fn put_chunk(&self, upload: UploadId, index: u32, leaves: &[u8]) -> Result<(), StoreError> {
        self.inner.put_chunk(upload, index, leaves)
    }
    fn commit_record(
        &self,
        signed: &SignedHeader,
        upload: UploadId,
        make: &mut dyn FnMut(i64) -> StoredSnapshot,
    ) -> Result<StoredSnapshot, StoreError> {
        self.inner.commit_record(signed, upload, make)
    }
    fn abort(&self, upload: UploadId) -> Result<(), StoreError> {
        self.inner.abort(upload)
    }
    fn chunk(&self, snapshot: &StoredSnapshot, index: u32) -> Result<Vec<u8>, StoreError> {
        self.inner.chunk(snapshot, index)
    }
    fn chunk_range(
        &self,
        snapshot: &StoredSnapshot,
        index: u32,
        start: u32,
        end: Option<u32>,
    ) -> Result<Vec<u8>, StoreError> {
        self.inner.chunk_range(snapshot, index, start, end)
    }
    fn chunks(&self, snapshot: &StoredSnapshot) -> Result<ChunkIter, StoreError> {
        let h = &snapshot.signed.header;
        let mut cue = self.fail_chunks_of.lock().unwrap();
        if *cue == Some((h.state, h.sequence)) {
            *cue = None;
            return Err(StoreError::Task("rigged to fail once".into()));
        }
        self.inner.chunks(snapshot)
    }
    fn put_block_roots(
        &self,
        digest: &SnapshotDigest,
        roots: &BlockRoots,
    ) -> Result<(), StoreError> {
        self.inner.put_block_roots(digest, roots)
    }
    fn block_roots(&self, digest: &SnapshotDigest) -> Result<Option<BlockRoots>, StoreError> {
        self.inner.block_roots(digest)
    }
    fn put_piece_starts(&self, digest: &SnapshotDigest, encoded: &[u8]) -> Result<(), StoreError> {
        self.inner.put_piece_starts(digest, encoded)
    }
    fn piece_starts(&self, digest: &SnapshotDigest) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.piece_starts(digest)
    }
    fn record_equivocation(&self, record: &Equivocation) -> Result<(), StoreError> {
        self.inner.record_equivocation(record)
    }
    fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        self.inner.equivocations()
    }
}

/// Puts a snapshot's chunks in the store as an upload, not yet committed.
fn prepare(store: &dyn SnapshotStore, s: &TestSnapshot) -> NewSnapshot {
    let upload = store.begin_upload().unwrap();
    for (i, chunk) in s.chunks.iter().enumerate() {
        store.put_chunk(upload, i as u32, chunk).unwrap();
    }
    NewSnapshot {
        signed: s.signed.clone(),
        digest: s.digest(),
        upload,
        chunk_count: s.chunks.len() as u32,
    }
}

fn commit_prepared(store: &dyn SnapshotStore, new: NewSnapshot) -> StoredSnapshot {
    let (state, sequence, digest) = (
        new.signed.header.state,
        new.signed.header.sequence,
        new.digest,
    );
    store
        .commit_new(new, &|earliest| {
            Receipt::issue(
                &coordinator_key(),
                state,
                sequence,
                digest,
                earliest.max(tally::support::clock::system_now_unix_ms()),
            )
        })
        .unwrap()
}

/// Open alerts as (key, body), comparable between engines.
fn open_alert_bodies(alerts: &AlertStore) -> Vec<String> {
    let mut out: Vec<String> = alerts
        .current_alerts()
        .unwrap()
        .iter()
        .filter(|a| a.status != AlertStatus::Cleared)
        .map(|a| format!("{:?} {:?}", a.key, a.body))
        .collect();
    out.sort();
    out
}

/// The seized alert's history: (action, the sequence that caused it).
fn seized_history(alerts: &AlertStore) -> Vec<(EventKind, Option<u64>)> {
    let current = alerts.current_alerts().unwrap();
    let seized = current
        .iter()
        .find(|a| a.key.kind == AlertKind::SeizedItem)
        .expect("a seized alert");
    seized
        .history
        .iter()
        .map(|h| (h.action, h.by.map(|b| b.sequence)))
        .collect()
}

/// A snapshot committed after a seizure report's time was issued, but
/// before the report's catch-up reads the store, is reconciled after the
/// report, as a rebuild does: the seized alert opens with sequence 1 current
/// and is then updated by sequence 2 (custody stays current). With the
/// snapshot first, it would open with sequence 2 current and never update,
/// where the rebuild opens and then updates it.
#[test]
fn a_snapshot_committed_while_a_report_is_stamped_comes_after_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let lost = items(&[("9M39", "B2", Lost, None)]);
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &lost);
    let rus2 = snapshot("RUS", 2, rus1.digest(), &lost);
    let live = {
        let inner = open_store(dir.path());
        let db = inner.db().clone();
        let store = Arc::new(RiggedStore::new(inner));
        let alerts = Arc::new(AlertStore::open(&db).unwrap());
        let seizures = Arc::new(SledSeizureStore::open(&db).unwrap());
        let now = tally::support::clock::system_now_unix_ms();
        let reconciler = Reconciler::open(
            store.clone(),
            alerts.clone(),
            seizures,
            EngineConfig::default(),
            now,
            None,
        )
        .unwrap();
        commit_prepared(store.as_ref(), prepare(store.as_ref(), &rus1));
        reconciler.catch_up(now).unwrap();
        *store.racing.lock().unwrap() = Some(prepare(store.as_ref(), &rus2));
        let report = reconciler
            .report_seizures(
                vec![tally::reconcile::Seizure {
                    key: lost[0].key.clone(),
                    model: "9M39".into(),
                    serial: "B2".into(),
                    seized_at_unix_ms: now - 60_000,
                    place: "border post".into(),
                    note: String::new(),
                }],
                now,
            )
            .unwrap();
        let second = store
            .get(state("RUS"), 2)
            .unwrap()
            .expect("the racing commit");
        assert!(second.receipt.accepted_at_unix_ms > report.reported_at_unix_ms);
        reconciler.catch_up(now).unwrap();
        let live = open_alert_bodies(&alerts);
        assert_eq!(
            seized_history(&alerts),
            [(EventKind::Opened, None), (EventKind::Updated, Some(2))],
            "{live:#?}"
        );
        live
    };
    let store = open_store(dir.path());
    for tree in tally::coordinator::storage::alerts::ALERT_TREES {
        store.db().drop_tree(tree).unwrap();
    }
    let db = store.db().clone();
    let alerts = Arc::new(AlertStore::open(&db).unwrap());
    let _rebuilt = Reconciler::open(
        Arc::new(store),
        alerts.clone(),
        Arc::new(SledSeizureStore::open(&db).unwrap()),
        EngineConfig::default(),
        tally::support::clock::system_now_unix_ms(),
        None,
    )
    .unwrap();
    assert_eq!(open_alert_bodies(&alerts), live);
}

/// A storage failure half-way through a catch-up leaves the engine ahead of
/// the alert store: the snapshot before the failure is applied, its alert
/// not recorded. The next change records it first, so the alerts equal a
/// rebuild's without waiting for a restart.
#[test]
fn an_alert_lost_to_a_failed_catch_up_is_recorded_by_the_next_change() {
    let dir = tempfile::tempdir().unwrap();
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A1", InService, None), ("9M39", "B2", Lost, None)]),
    );
    let blr1 = snapshot(
        "BLR",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A1", InService, None)]),
    );
    let live = {
        let inner = open_store(dir.path());
        let db = inner.db().clone();
        let store = Arc::new(RiggedStore::new(inner));
        let alerts = Arc::new(AlertStore::open(&db).unwrap());
        let now = tally::support::clock::system_now_unix_ms();
        let reconciler = Reconciler::open(
            store.clone(),
            alerts.clone(),
            Arc::new(SledSeizureStore::open(&db).unwrap()),
            EngineConfig::default(),
            now,
            None,
        )
        .unwrap();
        commit_prepared(store.as_ref(), prepare(store.as_ref(), &rus1));
        commit_prepared(store.as_ref(), prepare(store.as_ref(), &blr1));
        *store.fail_chunks_of.lock().unwrap() = Some((state("BLR"), 1));
        let failed = reconciler.catch_up(now).unwrap_err();
        assert!(
            failed
                .to_string()
                .starts_with("stored snapshot BLR 1 could not be read: ")
                && failed.to_string().contains("rigged"),
            "{failed}"
        );
        assert!(
            open_alert_bodies(&alerts).is_empty(),
            "RUS 1 was applied but its alert not recorded"
        );
        reconciler.catch_up(now).unwrap();
        let kinds: Vec<AlertKind> = alerts
            .current_alerts()
            .unwrap()
            .iter()
            .map(|a| a.key.kind)
            .collect();
        assert!(
            kinds.contains(&AlertKind::ReportedLost)
                && kinds.contains(&AlertKind::HeldBySeveralStates),
            "{kinds:?}"
        );
        open_alert_bodies(&alerts)
    };
    assert_eq!(rebuilt_alert_bodies(dir.path()), live);
}

/// Everything a reconciler needs on a store in `dir`, opened as the
/// coordinator opens it.
struct Parts {
    store: Arc<dyn SnapshotStore>,
    alerts: Arc<AlertStore>,
    seizures: Arc<dyn SeizureStore>,
    reconciler: Reconciler,
}

fn open_parts(store: SledStore) -> Parts {
    let db = store.db().clone();
    let store: Arc<dyn SnapshotStore> = Arc::new(store);
    let alerts = Arc::new(AlertStore::open(&db).unwrap());
    let seizures = Arc::new(SledSeizureStore::open(&db).unwrap());
    let reconciler = Reconciler::open(
        store.clone(),
        alerts.clone(),
        seizures.clone(),
        EngineConfig::default(),
        tally::support::clock::system_now_unix_ms(),
        None,
    )
    .unwrap();
    Parts {
        store,
        alerts,
        seizures,
        reconciler,
    }
}

/// The open alerts of a full rebuild from what `dir` holds (alert trees
/// dropped, no checkpoint).
fn rebuilt_alert_bodies(dir: &std::path::Path) -> Vec<String> {
    let store = open_store(dir);
    for tree in tally::coordinator::storage::alerts::ALERT_TREES {
        store.db().drop_tree(tree).unwrap();
    }
    open_alert_bodies(&open_parts(store).alerts)
}

fn seizure_of(item: &tally::item::Item, at: i64) -> tally::reconcile::Seizure {
    tally::reconcile::Seizure {
        key: item.key.clone(),
        model: item.model.clone(),
        serial: item.serial.clone(),
        seized_at_unix_ms: at,
        place: "border post".into(),
        note: String::new(),
    }
}

/// A report that is in the log but was never applied (its recording failed
/// after the write) goes in at its time at the next catch-up, before the
/// snapshots accepted after it, as in a rebuild.
#[test]
fn a_logged_report_not_yet_applied_goes_in_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let lost = items(&[("9M39", "B2", Lost, None)]);
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &lost);
    let rus2 = snapshot("RUS", 2, rus1.digest(), &lost);
    let live = {
        let parts = open_parts(open_store(dir.path()));
        let now = tally::support::clock::system_now_unix_ms();
        commit_prepared(parts.store.as_ref(), prepare(parts.store.as_ref(), &rus1));
        parts.reconciler.catch_up(now).unwrap();
        let at = parts.store.issue_time(now).unwrap();
        parts
            .seizures
            .record(vec![seizure_of(&lost[0], now - 60_000)], at)
            .unwrap();
        commit_prepared(parts.store.as_ref(), prepare(parts.store.as_ref(), &rus2));
        parts.reconciler.catch_up(now).unwrap();
        // The report went in before sequence 2, which then updated it.
        assert_eq!(
            seized_history(&parts.alerts),
            [(EventKind::Opened, None), (EventKind::Updated, Some(2))]
        );
        open_alert_bodies(&parts.alerts)
    };
    assert!(live.iter().any(|a| a.contains("SeizedItem")), "{live:#?}");
    assert_eq!(rebuilt_alert_bodies(dir.path()), live);
}

/// A chain whose acceptance times go back (a store written before times
/// were issued under the commit lock) is reconciled in chain order: the
/// item sequence 2 dropped has vanished, whatever the times say.
#[test]
fn a_chain_whose_acceptance_times_go_back_is_reconciled_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let held = items(&[("9K38", "A1", InService, None)]);
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &held);
    let rus2 = snapshot("RUS", 2, rus1.digest(), &[]);
    {
        let store = open_store(dir.path());
        for (s, at) in [(&rus1, 9_000), (&rus2, 7_000)] {
            let new = prepare(&store, s);
            let h = &new.signed.header;
            let receipt = Receipt::issue(&coordinator_key(), h.state, h.sequence, new.digest, at);
            store
                .commit(&StoredSnapshot {
                    signed: new.signed.clone(),
                    digest: new.digest,
                    receipt,
                    upload: new.upload,
                    chunk_count: new.chunk_count,
                })
                .unwrap();
        }
    }
    let parts = open_parts(open_store(dir.path()));
    let open = open_alert_bodies(&parts.alerts);
    assert!(
        open.iter()
            .any(|a| a.contains("UnaccountedDisappearance") && a.contains("sequence: 2")),
        "{open:#?}"
    );
    assert!(
        parts
            .reconciler
            .catch_up(tally::support::clock::system_now_unix_ms())
            .unwrap()
            .is_empty()
    );
}

/// Two conflicting submissions of one sequence, recorded in the order
/// opposite to their digests' (the order of the equivocation tree): a
/// rebuild applies them in recording order, as live, so the alert names the
/// later one in both.
#[test]
fn equivocations_of_one_sequence_are_rebuilt_in_recording_order() {
    let dir = tempfile::tempdir().unwrap();
    let rus1 = snapshot("RUS", 1, SnapshotDigest::GENESIS, &[]);
    let mut forks = [
        snapshot(
            "RUS",
            1,
            SnapshotDigest::GENESIS,
            &items(&[("9K38", "F1", InService, None)]),
        ),
        snapshot(
            "RUS",
            1,
            SnapshotDigest::GENESIS,
            &items(&[("9K38", "F2", InService, None)]),
        ),
    ];
    // Recorded first: the one whose digest sorts last.
    forks.sort_by_key(|f| std::cmp::Reverse(f.digest()));
    let live = {
        let parts = open_parts(open_store(dir.path()));
        let now = tally::support::clock::system_now_unix_ms();
        commit_prepared(parts.store.as_ref(), prepare(parts.store.as_ref(), &rus1));
        for (i, fork) in forks.iter().enumerate() {
            parts
                .store
                .record_equivocation(&Equivocation {
                    signed: fork.signed.clone(),
                    conflicts_with: rus1.digest(),
                    recorded_at_unix_ms: now + i as i64,
                })
                .unwrap();
            parts.reconciler.catch_up(now).unwrap();
        }
        open_alert_bodies(&parts.alerts)
    };
    let later = forks[1].digest().to_hex();
    assert!(
        live.iter()
            .any(|a| a.contains("ConflictingSubmission") && a.contains(&later[..16])),
        "{live:#?}"
    );
    assert_eq!(rebuilt_alert_bodies(dir.path()), live);
}

/// The clock-based rules of a running coordinator read its clock: with a
/// manual one, a test moves time past a transfer's grace period and a
/// state's cadence instead of waiting for them. The ticker runs every 50 ms;
/// the test only polls (bounded) for the tick that follows the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_manual_clock_past_the_grace_and_the_cadence_opens_their_alerts() {
    use tally::proto::alerts_client::AlertsClient;
    use tally::support::clock::Clock;

    const HOUR_MS: i64 = 60 * 60 * 1000;
    let dir = tempfile::tempdir().unwrap();
    // Snapshots of sequence 1 are as of 1_790_000_000_001 (see `snapshot`).
    let start = 1_790_000_000_001 + 60_000;
    let (clock, time) = Clock::manual(start);
    let engine = EngineConfig {
        transfer_grace_ms: HOUR_MS,
        cadence_ms: [(state("RUS"), 2 * HOUR_MS)].into_iter().collect(),
    };
    let coordinator = assemble_with_clock(
        dir.path(),
        &["RUS", "KAZ"],
        Default::default(),
        engine,
        std::time::Duration::from_millis(50),
        clock.clone(),
    );
    let coord = TestCoordinator::serve(coordinator).await;
    let mut snaps = coord.client().await;
    let receipt = submit(
        &mut snaps,
        &snapshot(
            "RUS",
            1,
            SnapshotDigest::GENESIS,
            &items(&[("9M39", "B3", TransferredOut, Some("KAZ"))]),
        ),
    )
    .await
    .unwrap();
    // The receipt is stamped with the coordinator's (manual) clock.
    assert_eq!(receipt.accepted_at_unix_ms, start);

    let mut client = AlertsClient::connect(coord.url()).await.expect("connect");
    // Within the grace period: a tick at the clock's time opens nothing.
    let reconciler = coord.reconciler.clone().expect("running");
    let now = clock.now_unix_ms();
    let ticked = tokio::task::spawn_blocking(move || reconciler.tick(now))
        .await
        .unwrap()
        .unwrap();
    assert!(ticked.is_empty(), "{ticked:?}");
    assert_eq!(open_kinds(&mut client).await, Vec::<String>::new());

    // Past the grace period (but within the cadence): the next tick of the
    // running coordinator opens `transfer_not_received`.
    time.advance(HOUR_MS);
    assert_eq!(
        wait_for_kinds(&mut client, &["transfer_not_received"]).await,
        vec!["transfer_not_received"]
    );

    // Past RUS's cadence: `snapshot_overdue` as well.
    time.advance(HOUR_MS);
    assert_eq!(
        wait_for_kinds(&mut client, &["snapshot_overdue", "transfer_not_received"]).await,
        vec!["snapshot_overdue", "transfer_not_received"]
    );
    coord.stop().await;
}

/// The kinds of every alert, sorted.
async fn open_kinds(
    client: &mut tally::proto::alerts_client::AlertsClient<tonic::transport::Channel>,
) -> Vec<String> {
    let mut kinds: Vec<String> = client
        .list_alerts(tally::proto::ListAlertsRequest::default())
        .await
        .expect("list alerts")
        .into_inner()
        .alerts
        .into_iter()
        .map(|a| a.kind)
        .collect();
    kinds.sort();
    kinds
}

/// Polls (for at most 10 s) until the alerts' kinds are `want`; returns
/// the last ones seen.
async fn wait_for_kinds(
    client: &mut tally::proto::alerts_client::AlertsClient<tonic::transport::Channel>,
    want: &[&str],
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = open_kinds(client).await;
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the coordinator's own timer has run the clock-based rules
/// `runs` more times than `before`: a run that started after the caller
/// moved its clock. Bounded by a generous deadline.
async fn clock_runs_after(metrics: &tally::coordinator::metrics::Metrics, before: f64, runs: f64) {
    let series = "tally_reconcile_duration_seconds_count{trigger=\"clock\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric(metrics, series).unwrap_or(0.0) < before + runs {
        assert!(
            std::time::Instant::now() < deadline,
            "the coordinator's timer did not run within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn clock_runs(metrics: &tally::coordinator::metrics::Metrics) -> f64 {
    metric(
        metrics,
        "tally_reconcile_duration_seconds_count{trigger=\"clock\"}",
    )
    .unwrap_or(0.0)
}

/// docs/alerts.md: the clock-based rules are re-evaluated on the
/// coordinator's timer, with no submission to prompt them:
/// `transfer_not_received` opens once `now ≥ as_of + grace` and
/// `snapshot_overdue` once `now > as_of + cadence`. A running coordinator
/// reads a manual clock the test moves; a `WatchAlerts` client sees each
/// alert open at the moment its clock reached (and not one tick earlier: at
/// `as_of + cadence` exactly, a timer run opens nothing). The only real
/// waiting is for the next run of the 10 ms timer, bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_coordinators_timer_opens_transfer_and_overdue_alerts_as_its_clock_passes_them()
{
    use tally::proto::{self, alerts_client::AlertsClient};
    const HOUR_MS: i64 = 60 * 60 * 1000;
    const DAY_MS: i64 = 24 * HOUR_MS;
    let dir = tempfile::tempdir().unwrap();
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "A1", InService, None),
            ("9P39", "P1", TransferredOut, Some("KAZ")),
        ]),
    );
    let as_of = rus1.signed.header.as_of_unix_ms;
    let (clock, time) = tally::support::clock::Clock::manual(as_of + 60_000);
    let coordinator = assemble_with_clock(
        dir.path(),
        &["RUS", "KAZ"],
        Default::default(),
        EngineConfig {
            transfer_grace_ms: HOUR_MS,
            cadence_ms: [(state("RUS"), DAY_MS)].into_iter().collect(),
        },
        std::time::Duration::from_millis(10),
        clock,
    );
    let metrics = coordinator.metrics.clone();
    let coord = TestCoordinator::serve(coordinator).await;
    let mut operator = AlertsClient::connect(coord.url()).await.expect("connect");
    let mut watcher = operator
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut next_event = async || {
        tokio::time::timeout(std::time::Duration::from_secs(30), watcher.message())
            .await
            .expect("an alert event within 30 s")
            .expect("stream ok")
            .expect("stream open")
    };

    submit(&mut coord.client().await, &rus1).await.unwrap();
    // Within the grace period and the cadence: timer runs open nothing.
    clock_runs_after(&metrics, clock_runs(&metrics), 2.0).await;
    assert_eq!(alerts(&coord).last_cursor(), 0, "nothing opened yet");

    // The grace period ends: the timer opens the transfer alert, stamped
    // with the coordinator's (manual) time.
    time.set(as_of + HOUR_MS);
    let opened = next_event().await;
    assert_eq!(
        (opened.cursor, opened.action.as_str(), opened.kind.as_str()),
        (1, "opened", "transfer_not_received")
    );
    assert_eq!(opened.at_unix_ms, as_of + HOUR_MS);
    let alert = operator
        .get_alert(proto::GetAlertRequest {
            id: opened.alert_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            alert.serial.as_str(),
            alert.state.as_str(),
            alert.counterparty.as_str()
        ),
        ("P1", "RUS", "KAZ")
    );

    // At the end of the cadence exactly, RUS is not overdue yet.
    time.set(as_of + DAY_MS);
    clock_runs_after(&metrics, clock_runs(&metrics), 2.0).await;
    assert_eq!(
        alerts(&coord).last_cursor(),
        1,
        "not overdue at as_of + cadence"
    );
    // One millisecond later it is; that is the next event the watcher
    // gets (the transfer alert did not change meanwhile).
    time.set(as_of + DAY_MS + 1);
    let overdue = next_event().await;
    assert_eq!(
        (
            overdue.cursor,
            overdue.action.as_str(),
            overdue.kind.as_str()
        ),
        (2, "opened", "snapshot_overdue")
    );
    assert_eq!(overdue.at_unix_ms, as_of + DAY_MS + 1);
    let mut current: Vec<(String, Option<String>)> = alerts(&coord)
        .current_alerts()
        .unwrap()
        .iter()
        .map(|a| (a.key.kind.to_string(), a.key.state.map(|s| s.to_string())))
        .collect();
    current.sort();
    assert_eq!(
        current,
        [
            ("snapshot_overdue".to_string(), Some("RUS".to_string())),
            ("transfer_not_received".to_string(), Some("RUS".to_string())),
        ]
    );
    drop((watcher, operator));
    coord.stop().await;
}
