//! The storage contract, once, for every backend: each test here is a
//! generic function over a [`Backend`], and [`conformance!`] instantiates
//! all of them for sled (on a temporary directory) and for memory, opened
//! as the coordinator opens them ([`Storage`]). What only one backend can
//! show (sled's reopen after a crash) stays beside it.

use std::sync::Arc;

use ed25519_dalek::SigningKey;

use super::alerts::tests::conflict_opened;
use super::alerts::{AlertStatus, AlertStorage, AlertStore, EventKind};
use super::audit_log::{AuditLog, AuditLogError, AuditStore};
use super::seizures::{SeizureReport, SeizureStore};
use super::{
    Equivocation, NewSnapshot, SnapshotStore, Storage, StoreError, StoredSnapshot, UploadId,
};
use crate::audit::{Action, Actor, Event, Outcome, verify};
use crate::snapshot::{Receipt, SignedHeader, SnapshotDigest, SnapshotHeader};
use crate::state::StateCode;

/// A backend under test: opens empty storage, and keeps what it needs (a
/// temporary directory) for as long as it lives.
pub(crate) trait Backend: Default {
    /// New, empty storage of this backend.
    fn storage(&mut self) -> Storage;

    fn snapshots(&mut self) -> Arc<dyn SnapshotStore> {
        self.storage().snapshots
    }
    fn seizures(&mut self) -> Arc<dyn SeizureStore> {
        self.storage().seizures
    }
    /// An audit log, sealing with `key`, over a new trail.
    fn audit(&mut self, key: SigningKey) -> Arc<dyn AuditStore> {
        Arc::new(AuditLog::open(self.storage().audit, key).unwrap())
    }
    fn alert_storage(&mut self) -> Arc<dyn AlertStorage> {
        self.storage().alerts
    }
}

/// sled, each storage in a temporary directory of its own.
#[derive(Default)]
pub(crate) struct Sled(Vec<tempfile::TempDir>);

impl Backend for Sled {
    fn storage(&mut self) -> Storage {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open_sled(dir.path()).unwrap();
        self.0.push(dir);
        storage
    }
}

/// The in-memory backend.
#[derive(Default)]
pub(crate) struct Memory;

impl Backend for Memory {
    fn storage(&mut self) -> Storage {
        Storage::in_memory()
    }
}

fn state(code: &str) -> StateCode {
    StateCode::parse(code).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

/// A signed header for `state`'s `sequence` after `previous`; `salt` makes
/// two headers for one sequence differ.
fn signed(state: StateCode, sequence: u64, previous: SnapshotDigest, salt: u8) -> SignedHeader {
    SnapshotHeader {
        state,
        sequence,
        as_of_unix_ms: 1_000 * sequence as i64,
        previous_digest: previous,
        item_count: 0,
        items_root: [salt; 32],
    }
    .sign(&key())
}

/// Uploads `chunks` (not committed).
fn upload(store: &dyn SnapshotStore, chunks: &[&[u8]]) -> UploadId {
    let upload = store.begin_upload().unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        store.put_chunk(upload, i as u32, chunk).unwrap();
    }
    upload
}

/// The record of `signed` stored as `upload` of `chunk_count` chunks.
fn record(signed: SignedHeader, upload: UploadId, chunk_count: u32, at: i64) -> StoredSnapshot {
    let digest = signed.digest();
    let h = signed.header;
    StoredSnapshot {
        receipt: Receipt::issue(&key(), h.state, h.sequence, digest, at),
        signed,
        digest,
        upload,
        chunk_count,
    }
}

/// Uploads `chunks` and commits them as `state`'s next snapshot.
fn commit_next(store: &dyn SnapshotStore, state: StateCode, chunks: &[&[u8]]) -> StoredSnapshot {
    let latest = store.latest(state).unwrap();
    let sequence = latest.as_ref().map_or(1, |l| l.signed.header.sequence + 1);
    let previous = latest.map_or(SnapshotDigest::GENESIS, |l| l.digest);
    let up = upload(store, chunks);
    let r = record(
        signed(state, sequence, previous, 0),
        up,
        chunks.len() as u32,
        sequence as i64,
    );
    store.commit(&r).unwrap();
    r
}

pub(crate) fn commit_then_read_back<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let (rus, kaz) = (state("RUS"), state("KAZ"));
    let r1 = commit_next(store.as_ref(), rus, &[b"a"]);
    let r2 = commit_next(store.as_ref(), rus, &[b"b", b"c"]);
    let r3 = commit_next(store.as_ref(), rus, &[]);
    let k1 = commit_next(store.as_ref(), kaz, &[b"k"]);
    assert_eq!(store.latest(rus).unwrap(), Some(r3.clone()));
    assert_eq!(store.latest(kaz).unwrap(), Some(k1.clone()));
    assert_eq!(store.latest(state("UKR")).unwrap(), None);
    assert_eq!(store.get(rus, 2).unwrap(), Some(r2.clone()));
    assert_eq!(store.get(rus, 4).unwrap(), None);
    assert_eq!(store.get(kaz, 2).unwrap(), None);
    assert_eq!(
        store.list(rus, 0, 10).unwrap(),
        [r1.clone(), r2.clone(), r3]
    );
    assert_eq!(store.list(rus, 2, 1).unwrap(), [r2]);
    assert_eq!(store.list(rus, 4, 10).unwrap(), []);
    assert_eq!(store.list(kaz, 1, 10).unwrap(), [k1]);
    assert_eq!(store.states().unwrap(), [kaz, rus]);
}

pub(crate) fn nothing_is_visible_before_its_commit<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let rus = state("RUS");
    let up = upload(store.as_ref(), &[b"one", b"two"]);
    assert_eq!(store.latest(rus).unwrap(), None);
    assert_eq!(store.get(rus, 1).unwrap(), None);
    assert_eq!(store.list(rus, 0, 10).unwrap(), []);
    assert_eq!(store.states().unwrap(), []);
    let r = record(signed(rus, 1, SnapshotDigest::GENESIS, 0), up, 2, 5);
    store.commit(&r).unwrap();
    assert_eq!(store.latest(rus).unwrap(), Some(r.clone()));
    assert_eq!(store.states().unwrap(), [rus]);
}

pub(crate) fn aborted_uploads_stay_invisible<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let rus = state("RUS");
    let up = upload(store.as_ref(), &[b"gone"]);
    store.abort(up).unwrap();
    let r = record(signed(rus, 1, SnapshotDigest::GENESIS, 0), up, 1, 5);
    assert!(store.chunk(&r, 0).is_err());
    assert!(store.commit(&r).is_err());
    assert_eq!(store.latest(rus).unwrap(), None);
    assert_eq!(store.states().unwrap(), []);
    // The next upload commits as sequence 1.
    let kept = commit_next(store.as_ref(), rus, &[b"kept"]);
    assert_eq!(kept.signed.header.sequence, 1);
    assert_eq!(store.chunk(&kept, 0).unwrap(), b"kept");
}

pub(crate) fn a_commit_off_the_chain_is_chain_moved<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let rus = state("RUS");
    let first = upload(store.as_ref(), &[b"a"]);
    let second = upload(store.as_ref(), &[b"b"]);
    let winner = record(signed(rus, 1, SnapshotDigest::GENESIS, 1), first, 1, 5);
    let loser = record(signed(rus, 1, SnapshotDigest::GENESIS, 2), second, 1, 6);
    store.commit(&winner).unwrap();
    assert!(matches!(
        store.commit(&loser),
        Err(StoreError::ChainMoved { state, sequence: 1 }) if state == rus
    ));
    // A gap, or a wrong previous digest, is off the chain too.
    let gap = record(
        signed(rus, 3, winner.digest, 0),
        upload(store.as_ref(), &[]),
        0,
        7,
    );
    assert!(matches!(
        store.commit(&gap),
        Err(StoreError::ChainMoved { .. })
    ));
    let fork = record(
        signed(rus, 2, loser.digest, 0),
        upload(store.as_ref(), &[]),
        0,
        7,
    );
    assert!(matches!(
        store.commit(&fork),
        Err(StoreError::ChainMoved { .. })
    ));
    assert_eq!(store.list(rus, 0, 10).unwrap(), [winner]);
}

pub(crate) fn of_two_racing_commits_one_wins<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let rus = state("RUS");
    let records: Vec<StoredSnapshot> = (0..8)
        .map(|salt| {
            let up = upload(store.as_ref(), &[&[salt]]);
            record(signed(rus, 1, SnapshotDigest::GENESIS, salt), up, 1, 5)
        })
        .collect();
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = records
            .iter()
            .map(|r| {
                let store = store.clone();
                s.spawn(move || store.commit(r))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StoreError::ChainMoved { sequence: 1, .. })))
    );
    let winner = &records[won[0]];
    assert_eq!(store.latest(rus).unwrap().as_ref(), Some(winner));
    assert_eq!(store.chunk(winner, 0).unwrap(), [won[0] as u8]);
}

pub(crate) fn acceptance_times_increase_in_commit_order<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let (rus, kaz) = (state("RUS"), state("KAZ"));
    let commit_new = |state: StateCode, wanted: i64| {
        let latest = store.latest(state).unwrap();
        let sequence = latest.as_ref().map_or(1, |l| l.signed.header.sequence + 1);
        let previous = latest.map_or(SnapshotDigest::GENESIS, |l| l.digest);
        let signed = signed(state, sequence, previous, 0);
        let digest = signed.digest();
        let new = NewSnapshot {
            signed,
            digest,
            upload: upload(store.as_ref(), &[]),
            chunk_count: 0,
        };
        store
            .commit_new(new, &|earliest| {
                Receipt::issue(&key(), state, sequence, digest, wanted.max(earliest))
            })
            .unwrap()
            .receipt
            .accepted_at_unix_ms
    };
    assert_eq!(commit_new(rus, 1_000), 1_000);
    // A clock gone back: the next time is still later, whatever the state.
    assert_eq!(commit_new(kaz, 500), 1_001);
    assert_eq!(store.issue_time(0).unwrap(), 1_002);
    assert_eq!(store.issue_time(5_000).unwrap(), 5_000);
    assert_eq!(commit_new(rus, 0), 5_001);
    assert_eq!(
        store
            .get(rus, 2)
            .unwrap()
            .unwrap()
            .receipt
            .accepted_at_unix_ms,
        5_001
    );
}

pub(crate) fn chunks_read_back_in_order<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let rus = state("RUS");
    let chunks: [&[u8]; 3] = [b"committed", b"second", b""];
    let r = commit_next(store.as_ref(), rus, &chunks);
    let read: Vec<Vec<u8>> = store.chunks(&r).unwrap().map(|c| c.unwrap()).collect();
    assert_eq!(read, chunks);
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(store.chunk(&r, i as u32).unwrap(), *chunk);
    }
    assert!(store.chunk(&r, 3).is_err());
    assert_eq!(store.chunk_range(&r, 0, 2, Some(5)).unwrap(), b"mmi");
    assert_eq!(store.chunk_range(&r, 0, 6, None).unwrap(), b"ted");
    assert_eq!(store.chunk_range(&r, 1, 6, None).unwrap(), b"");
    assert!(store.chunk_range(&r, 0, 6, Some(10)).is_err());
    assert!(store.chunk_range(&r, 0, 5, Some(4)).is_err());
    assert!(store.chunk_range(&r, 3, 0, None).is_err());
}

pub(crate) fn derived_data_reads_back_by_digest<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let r = commit_next(store.as_ref(), state("RUS"), &[b"x"]);
    let other = SnapshotDigest([9; 32]);
    assert_eq!(store.piece_starts(&r.digest).unwrap(), None);
    store.put_piece_starts(&r.digest, b"starts").unwrap();
    assert_eq!(
        store.piece_starts(&r.digest).unwrap().as_deref(),
        Some(&b"starts"[..])
    );
    assert_eq!(store.piece_starts(&other).unwrap(), None);
    assert!(store.block_roots(&r.digest).unwrap().is_none());
}

pub(crate) fn equivocations_are_kept_by_state_and_sequence<B: Backend>() {
    let mut backend = B::default();
    let store = backend.snapshots();
    let (rus, kaz) = (state("RUS"), state("KAZ"));
    let r1 = commit_next(store.as_ref(), rus, &[]);
    let equivocation = |state: StateCode, sequence: u64, salt: u8, at: i64| Equivocation {
        signed: signed(state, sequence, SnapshotDigest::GENESIS, salt),
        conflicts_with: r1.digest,
        recorded_at_unix_ms: at,
    };
    assert_eq!(store.equivocations().unwrap(), []);
    let later = equivocation(rus, 2, 1, 10);
    let earlier = equivocation(rus, 1, 2, 20);
    let other = equivocation(kaz, 7, 3, 30);
    for e in [&later, &earlier, &other] {
        store.record_equivocation(e).unwrap();
    }
    // Recording one again keeps one copy.
    store.record_equivocation(&later).unwrap();
    assert_eq!(store.equivocations().unwrap(), [other, earlier, later]);
    // Evidence, not history: the chain is as it was.
    assert_eq!(store.list(rus, 0, 10).unwrap(), [r1]);
}

pub(crate) fn seizure_reports_round_trip<B: Backend>() {
    let mut backend = B::default();
    let log = backend.seizures();
    assert_eq!(log.all().unwrap(), []);
    let rule = crate::serial::CanonicalRule::default();
    let seized = |serial: &str| crate::reconcile::Seizure {
        key: crate::serial::ItemKey {
            model: crate::serial::CanonicalModel::from_raw("AK-74M", &rule).unwrap(),
            serial: crate::serial::CanonicalSerial::from_raw(serial, &rule).unwrap(),
        },
        model: "AK-74M".into(),
        serial: serial.into(),
        seized_at_unix_ms: 42,
        place: "Almaty".into(),
        note: "at a checkpoint".into(),
    };
    let first = log
        .record(vec![seized("123"), seized("0456")], 100)
        .unwrap();
    let second = log.record(Vec::new(), 50).unwrap();
    assert_eq!((first.id, second.id), (1, 2));
    assert_eq!(second.reported_at_unix_ms, 50);
    assert_eq!(first.items, [seized("123"), seized("0456")]);
    assert_eq!(log.all().unwrap(), [first.clone(), second.clone()]);
    assert_eq!(log.after(1).unwrap(), [second]);
    assert_eq!(log.after(2).unwrap(), []);
    assert_eq!(log.after(u64::MAX).unwrap(), []);
}

pub(crate) fn seizure_pages_end_at_the_report_limit_or_the_byte_budget<B: Backend>() {
    let mut backend = B::default();
    let log = backend.seizures();
    for at in 1..=5 {
        log.record(Vec::new(), at).unwrap();
    }
    let ids = |(page, more): (Vec<SeizureReport>, bool)| {
        (page.iter().map(|r| r.id).collect::<Vec<_>>(), more)
    };
    assert_eq!(
        ids(log.page_after(0, 2, usize::MAX).unwrap()),
        (vec![1, 2], true)
    );
    assert_eq!(
        ids(log.page_after(2, 2, usize::MAX).unwrap()),
        (vec![3, 4], true)
    );
    assert_eq!(
        ids(log.page_after(4, 2, usize::MAX).unwrap()),
        (vec![5], false)
    );
    assert_eq!(
        ids(log.page_after(5, 2, usize::MAX).unwrap()),
        (vec![], false)
    );
    assert_eq!(
        ids(log.page_after(u64::MAX, 2, 1).unwrap()),
        (vec![], false)
    );
    // A budget smaller than one report still returns one.
    assert_eq!(ids(log.page_after(0, 100, 1).unwrap()), (vec![1], true));
}

fn event(i: u64) -> Event {
    Event {
        at_unix_ms: i as i64,
        actor: Actor::Anonymous,
        peer: None,
        action: Action::AcknowledgeAlert { alert_id: i },
        outcome: Outcome::Ok,
    }
}

pub(crate) fn concurrent_audit_appends_form_one_chain<B: Backend>() {
    let mut backend = B::default();
    let log = backend.audit(key());
    assert_eq!(log.last_sequence(), 0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..10 {
                    log.append(event(t * 100 + i)).unwrap();
                }
            });
        }
    });
    assert_eq!(log.last_sequence(), 40);
    let all = log.list(1, usize::MAX).unwrap();
    assert_eq!(verify(&all, &key().verifying_key()).unwrap().records, 40);
}

pub(crate) fn audit_records_read_back_in_pages<B: Backend>() {
    let mut backend = B::default();
    let log = backend.audit(key());
    assert_eq!(log.list(1, 10).unwrap(), []);
    let appended: Vec<_> = (0..5).map(|i| log.append(event(i)).unwrap()).collect();
    assert_eq!(
        appended.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(log.last_sequence(), 5);
    assert_eq!(log.list(1, usize::MAX).unwrap(), appended);
    assert_eq!(log.list(0, 2).unwrap(), appended[..2]);
    assert_eq!(log.list(4, 10).unwrap(), appended[3..]);
    assert_eq!(log.list(4, 1).unwrap()[0].sequence, 4);
    assert_eq!(log.list(6, 10).unwrap(), []);
    let decoded = log.list(3, 1).unwrap()[0].decode().unwrap();
    assert_eq!(
        decoded.event.action,
        Action::AcknowledgeAlert { alert_id: 2 }
    );
}

pub(crate) fn an_audit_trail_restores_into_an_empty_trail_only<B: Backend>() {
    let mut backend = B::default();
    let original = backend.storage().audit;
    let log = AuditLog::open(original.clone(), key()).unwrap();
    for i in 0..3 {
        log.append(event(i)).unwrap();
    }
    let records = original.all().unwrap();
    assert_eq!(records, log.list(0, usize::MAX).unwrap());
    assert_eq!(records.len(), 3);

    let restored = backend.storage().audit;
    assert_eq!(restored.all().unwrap(), []);
    restored.restore(&records).unwrap();
    assert_eq!(restored.all().unwrap(), records);
    assert!(matches!(
        restored.restore(&records),
        Err(AuditLogError::NotEmpty)
    ));
    // A log opened on the restored trail chains on from its last record.
    let log = AuditLog::open(restored.clone(), key()).unwrap();
    assert_eq!(log.last_sequence(), 3);
    assert_eq!(log.append(event(3)).unwrap().sequence, 4);
    let all = restored.all().unwrap();
    assert_eq!(verify(&all, &key().verifying_key()).unwrap().records, 4);
}

fn cleared() -> crate::reconcile::AlertChange {
    crate::reconcile::AlertChange::Cleared {
        key: conflict_opened().key().clone(),
        by: None,
    }
}

pub(crate) fn alert_changes_and_their_events_read_back<B: Backend>() {
    let mut backend = B::default();
    let alerts = AlertStore::with_storage(backend.alert_storage()).unwrap();
    let opened = conflict_opened();
    let key = opened.key().clone();
    let events = alerts.apply(&[opened], 1_000).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.cursor, e.alert_id))
            .collect::<Vec<_>>(),
        [(1, 1)]
    );
    let alert = alerts.current(&key).unwrap().unwrap();
    assert_eq!((alert.id, alert.status), (1, AlertStatus::Open));
    assert_eq!(alerts.get(1).unwrap(), Some(alert.clone()));
    assert_eq!(alerts.current_alerts().unwrap(), [alert]);
    let acknowledged = alerts.acknowledge(1, "seen", 2_000).unwrap();
    assert_eq!(acknowledged.status, AlertStatus::Acknowledged);
    assert_eq!(
        (alerts.last_cursor(), alerts.last_stored_cursor().unwrap()),
        (2, 2)
    );
    assert_eq!(
        alerts
            .events_after(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>(),
        [EventKind::Opened, EventKind::Acknowledged]
    );
    assert_eq!(alerts.events_after(1, 10).unwrap().len(), 1);
    assert_eq!(alerts.events_after(0, 1).unwrap().len(), 1);
    assert!(alerts.events_after(2, 10).unwrap().is_empty());
}

pub(crate) fn a_returning_condition_opens_a_new_alert<B: Backend>() {
    let mut backend = B::default();
    let storage = backend.alert_storage();
    let alerts = AlertStore::with_storage(storage.clone()).unwrap();
    let key = conflict_opened().key().clone();
    alerts.apply(&[conflict_opened()], 1_000).unwrap();
    alerts.apply(&[cleared()], 2_000).unwrap();
    assert_eq!(alerts.current(&key).unwrap(), None);
    assert!(alerts.current_alerts().unwrap().is_empty());
    // A store over the same storage goes on with its ids and cursors.
    drop(alerts);
    let alerts = AlertStore::with_storage(storage).unwrap();
    alerts.apply(&[conflict_opened()], 3_000).unwrap();
    let again = alerts.current(&key).unwrap().unwrap();
    assert_eq!((again.id, again.previous_occurrence), (2, Some(1)));
    assert_eq!(alerts.last_cursor(), 3);
    let all: Vec<(u64, AlertStatus)> = alerts
        .all()
        .unwrap()
        .iter()
        .map(|a| (a.id, a.status))
        .collect();
    assert_eq!(all, [(1, AlertStatus::Cleared), (2, AlertStatus::Open)]);
    let newest_first = |before| {
        let (page, more) = alerts.page_before(before, 1, |_| true).unwrap();
        (page.iter().map(|a| a.id).collect::<Vec<_>>(), more)
    };
    assert_eq!(newest_first(u64::MAX), (vec![2], true));
    assert_eq!(newest_first(2), (vec![1], false));
    let (open, more) = alerts
        .page_before(u64::MAX, 10, |a| a.status == AlertStatus::Cleared)
        .unwrap();
    assert_eq!((open.len(), open[0].id, more), (1, 1, false));
}

pub(crate) fn quarantined_alerts_leave_the_storage_empty<B: Backend>() {
    let mut backend = B::default();
    let storage = backend.alert_storage();
    let alerts = AlertStore::with_storage(storage.clone()).unwrap();
    alerts.apply(&[conflict_opened()], 1_000).unwrap();
    alerts.acknowledge(1, "seen", 2_000).unwrap();
    drop(alerts);
    assert!(!storage.quarantine(3_000).unwrap().is_empty());
    assert_eq!(storage.get(1).unwrap(), None);
    assert_eq!(
        storage
            .newest_id(&super::alerts::identity(conflict_opened().key()))
            .unwrap(),
        None
    );
    assert!(storage.newest_ids().unwrap().is_empty());
    assert!(storage.events_after(0, 10).unwrap().is_empty());
    assert_eq!(
        (
            storage.last_alert_id().unwrap(),
            storage.last_cursor().unwrap()
        ),
        (0, 0)
    );
    // A store over it starts again: the condition opens as a first alert.
    let alerts = AlertStore::with_storage(storage).unwrap();
    let events = alerts.apply(&[conflict_opened()], 4_000).unwrap();
    assert_eq!((events[0].cursor, events[0].alert_id), (1, 1));
    assert_eq!(alerts.get(1).unwrap().unwrap().previous_occurrence, None);
}

pub(crate) fn storage_flushes_what_every_store_wrote<B: Backend>() {
    let mut backend = B::default();
    let storage = backend.storage();
    commit_next(storage.snapshots.as_ref(), state("RUS"), &[b"a"]);
    storage.seizures.record(Vec::new(), 1).unwrap();
    AuditLog::open(storage.audit.clone(), key())
        .unwrap()
        .append(event(1))
        .unwrap();
    AlertStore::with_storage(storage.alerts.clone())
        .unwrap()
        .apply(&[conflict_opened()], 1_000)
        .unwrap();
    storage.flush().unwrap();
}

/// Instantiates every test of the suite for one backend.
macro_rules! conformance {
    ($module:ident, $backend:ty, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test::<$backend>();
                }
            )*
        }
    };
}

macro_rules! suite {
    ($module:ident, $backend:ty) => {
        conformance!(
            $module,
            $backend,
            [
                commit_then_read_back,
                nothing_is_visible_before_its_commit,
                aborted_uploads_stay_invisible,
                a_commit_off_the_chain_is_chain_moved,
                of_two_racing_commits_one_wins,
                acceptance_times_increase_in_commit_order,
                chunks_read_back_in_order,
                derived_data_reads_back_by_digest,
                equivocations_are_kept_by_state_and_sequence,
                seizure_reports_round_trip,
                seizure_pages_end_at_the_report_limit_or_the_byte_budget,
                concurrent_audit_appends_form_one_chain,
                audit_records_read_back_in_pages,
                an_audit_trail_restores_into_an_empty_trail_only,
                alert_changes_and_their_events_read_back,
                a_returning_condition_opens_a_new_alert,
                quarantined_alerts_leave_the_storage_empty,
                storage_flushes_what_every_store_wrote,
            ]
        );
    };
}

suite!(sled_backend, super::Sled);
suite!(memory_backend, super::Memory);
