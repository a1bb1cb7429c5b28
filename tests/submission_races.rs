//! Two submissions of one state at once. Which one commits first is decided
//! by [`GatedStore`], which holds one upload at its commit until the test
//! lets it go: the race is run, not hoped for.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally::coordinator::admission::Ingestor;
use tally::coordinator::metrics::Metrics;
use tally::coordinator::storage::{
    ChunkIter, Equivocation, NewSnapshot, SnapshotStore, StoreError, StoredSnapshot, UploadId,
};
use tally::merkle::BlockRoots;
use tally::proto::snapshots_client::SnapshotsClient;
use tally::serial::CanonicalRule;
use tally::snapshot::{Receipt, SnapshotDigest};
use tally::state::StateCode;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

/// How long any one step may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(30);

/// A store around the coordinator's own that, on cue, holds the next
/// commit (after its upload's items are verified and stored, before the
/// chain is checked under the commit lock) until released, or answers the
/// next commit with `ChainMoved` without committing.
struct GatedStore {
    inner: Arc<dyn SnapshotStore>,
    hold: Mutex<Option<Hold>>,
    refuse_next_commit: AtomicBool,
}

struct Hold {
    /// Told which upload is held, once it is.
    parked: tokio::sync::oneshot::Sender<UploadId>,
    /// The held commit goes on when this is sent to (or dropped).
    release: std::sync::mpsc::Receiver<()>,
}

impl GatedStore {
    /// Holds the next commit: returns what says it is held, and what
    /// releases it.
    fn hold_next_commit(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<UploadId>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (parked, is_parked) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel();
        *self.hold.lock().unwrap() = Some(Hold {
            parked,
            release: released,
        });
        (is_parked, release)
    }
}

impl SnapshotStore for GatedStore {
    fn commit_new(
        &self,
        new: NewSnapshot,
        issue: &dyn Fn(i64) -> Receipt,
    ) -> Result<StoredSnapshot, StoreError> {
        let hold = self.hold.lock().unwrap().take();
        if let Some(hold) = hold {
            let _ = hold.parked.send(new.upload);
            // Called on a blocking thread of the coordinator: waiting here
            // holds this upload only.
            let _ = hold.release.recv();
        }
        if self.refuse_next_commit.swap(false, Ordering::SeqCst) {
            return Err(StoreError::ChainMoved {
                state: new.signed.header.state,
                sequence: new.signed.header.sequence,
            });
        }
        self.inner.commit_new(new, issue)
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
    fn commit(&self, record: &StoredSnapshot) -> Result<(), StoreError> {
        self.inner.commit(record)
    }
    fn commit_record(
        &self,
        signed: &tally::snapshot::SignedHeader,
        upload: UploadId,
        make: &mut dyn FnMut(i64) -> StoredSnapshot,
    ) -> Result<StoredSnapshot, StoreError> {
        self.inner.commit_record(signed, upload, make)
    }
    fn issue_time(&self, not_before: i64) -> Result<i64, StoreError> {
        self.inner.issue_time(not_before)
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

/// A coordinator for RUS on a sled store in `dir`, ingesting through a
/// [`GatedStore`] around it.
async fn start_gated(dir: &Path) -> (TestCoordinator, Arc<GatedStore>, Arc<Metrics>) {
    let mut coordinator = assemble(dir, &["RUS"], Default::default(), Default::default());
    let gated = Arc::new(GatedStore {
        inner: coordinator.ingestor.store().clone(),
        hold: Mutex::new(None),
        refuse_next_commit: AtomicBool::new(false),
    });
    coordinator.ingestor = Ingestor::new(
        gated.clone(),
        [(state("RUS"), state_key("RUS").verifying_key())],
        coordinator_key(),
        Default::default(),
        CanonicalRule::default(),
    );
    let metrics = coordinator.metrics.clone();
    (TestCoordinator::serve(coordinator).await, gated, metrics)
}

/// Submits `snap` on a connection of its own, as a task.
fn spawn_submit(
    client: SnapshotsClient<Channel>,
    snap: &TestSnapshot,
) -> tokio::task::JoinHandle<Result<Receipt, tonic::Status>> {
    let mut messages = vec![header_msg(&snap.signed)];
    messages.extend(snap.chunks.iter().map(|c| chunk_msg(c)));
    let mut client = client;
    tokio::spawn(async move { send(&mut client, messages).await })
}

/// The chunk files of uploads in the sled store: committed ones, and any
/// upload not yet discarded.
fn chunk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("leaf-chunks"))
        .expect("chunk directory")
        .count()
}

#[track_caller]
fn counter(metrics: &Metrics, series: &str) -> f64 {
    metric(metrics, series).unwrap_or_else(|| panic!("no sample {series}"))
}

/// docs/protocol.md §5.1: "If two submissions of the same state race, only
/// one commits; the other ends in the resubmission ... answer". The same
/// snapshot is uploaded twice at once: the first upload is held at its
/// commit while the second commits, then finds the chain moved on to this
/// very snapshot. Both get the one original receipt; one copy is stored,
/// the held upload's chunks are discarded, no equivocation is recorded,
/// and the metrics count one acceptance and one resubmission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_snapshot_uploaded_twice_at_once_is_stored_once_and_both_get_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, gated, metrics) = start_gated(dir.path()).await;
    let snap = snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(200));

    let (parked, release) = gated.hold_next_commit();
    let first = spawn_submit(coord.client().await, &snap);
    let held = tokio::time::timeout(DEADLINE, parked)
        .await
        .expect("the first upload reaches its commit")
        .expect("held");
    // Verified and stored invisibly, not committed.
    assert_eq!(coord.store.latest(state("RUS")).unwrap(), None);
    assert_eq!(chunk_files(dir.path()), 1);

    let second = tokio::time::timeout(DEADLINE, submit(&mut coord.client().await, &snap))
        .await
        .expect("the second upload is not held")
        .expect("the second upload commits");
    release.send(()).unwrap();
    let first = tokio::time::timeout(DEADLINE, first)
        .await
        .expect("the held upload ends once released")
        .unwrap()
        .expect("the held upload gets a receipt");

    assert_eq!(first, second, "the original receipt, unchanged");
    assert!(first.verify(&coordinator_key().verifying_key()));
    assert_eq!(first.digest, snap.digest());
    let stored = coord.store.get(state("RUS"), 1).unwrap().expect("stored");
    assert_eq!(stored.receipt, second);
    assert_ne!(
        stored.upload, held,
        "the stored copy is the second upload's"
    );
    assert_eq!(
        stored_state(coord.store.as_ref()),
        (
            [("RUS".to_string(), vec![(1, snap.digest().to_hex())])].into(),
            0
        )
    );
    assert_eq!(
        chunk_files(dir.path()),
        1,
        "the held upload's chunks are gone"
    );
    fetch_and_verify(&mut coord.client().await, "RUS", 1).await;
    assert_eq!(counter(&metrics, "tally_snapshots_accepted_total"), 1.0);
    assert_eq!(counter(&metrics, "tally_snapshots_resubmitted_total"), 1.0);
    assert_eq!(counter(&metrics, "tally_items_ingested_total"), 200.0);
    drop(gated);
    coord.stop().await;
}

/// docs/protocol.md §5.1 and §6: of two different snapshots with the same
/// sequence uploaded at once, the one that commits first is stored; the
/// other, held at its commit meanwhile, ends in the conflict answer
/// (`ALREADY_EXISTS`, naming both digests) with its signed header kept as
/// an equivocation, and nothing of its upload stored: the stored snapshot,
/// its items and the chunk files are the winner's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_snapshots_with_one_sequence_at_once_store_one_and_refuse_the_other() {
    use tally::item::Status::*;
    let dir = tempfile::tempdir().unwrap();
    let (coord, gated, metrics) = start_gated(dir.path()).await;
    let loser = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A1", InService, None), ("9M39", "B2", Lost, None)]),
    );
    let winner = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A1", InService, None)]),
    );
    assert_ne!(loser.digest(), winner.digest());

    let (parked, release) = gated.hold_next_commit();
    let held = spawn_submit(coord.client().await, &loser);
    tokio::time::timeout(DEADLINE, parked)
        .await
        .expect("the first upload reaches its commit")
        .expect("held");
    let receipt = tokio::time::timeout(DEADLINE, submit(&mut coord.client().await, &winner))
        .await
        .expect("the second upload is not held")
        .expect("the second upload commits");
    assert_eq!(receipt.digest, winner.digest());
    release.send(()).unwrap();
    let refused = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("the held upload ends once released")
        .unwrap()
        .expect_err("the held upload is refused");

    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("RUS sequence 1 was already accepted")
            && message.contains(&winner.digest().to_hex())
            && message.contains(&loser.digest().to_hex()),
        "{message}"
    );
    assert_eq!(
        stored_state(coord.store.as_ref()),
        (
            [("RUS".to_string(), vec![(1, winner.digest().to_hex())])].into(),
            1
        )
    );
    let equivocations = coord.store.equivocations().unwrap();
    assert_eq!(equivocations[0].signed, loser.signed);
    assert_eq!(equivocations[0].conflicts_with, winner.digest());
    let (signed, leaves) = fetch_and_verify(&mut coord.client().await, "RUS", 1).await;
    assert_eq!(signed, winner.signed);
    assert_eq!(leaves, winner.chunks.concat());
    assert_eq!(
        chunk_files(dir.path()),
        1,
        "the refused upload's chunks are gone"
    );
    assert_eq!(counter(&metrics, "tally_snapshots_accepted_total"), 1.0);
    assert_eq!(
        counter(
            &metrics,
            "tally_snapshots_rejected_total{reason=\"already_exists\"}"
        ),
        1.0
    );
    drop(gated);
    coord.stop().await;
}

/// docs/protocol.md §6, `ABORTED`: a commit that finds the chain moved, where
/// a fresh look at the stored chain shows neither this snapshot nor a
/// conflict, is answered `ABORTED` (retry) with nothing stored and nothing
/// recorded; sending the same snapshot again gets it accepted. (With a
/// consistent store a moved chain always shows one of the two; the store
/// here reports a move that did not happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_finds_the_chain_moved_without_a_cause_is_aborted_and_a_resend_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, gated, metrics) = start_gated(dir.path()).await;
    let snap = snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(20));
    let mut client = coord.client().await;

    gated.refuse_next_commit.store(true, Ordering::SeqCst);
    let aborted = submit(&mut client, &snap)
        .await
        .expect_err("the commit is refused");
    assert_eq!(aborted.code(), Code::Aborted, "{aborted:?}");
    assert_eq!(stored_state(coord.store.as_ref()), (Default::default(), 0));
    assert_eq!(
        chunk_files(dir.path()),
        0,
        "the aborted upload's chunks are gone"
    );
    assert_eq!(
        counter(
            &metrics,
            "tally_snapshots_rejected_total{reason=\"aborted\"}"
        ),
        1.0
    );

    let receipt = submit(&mut client, &snap)
        .await
        .expect("the resend commits");
    assert_eq!(receipt.digest, snap.digest());
    fetch_and_verify(&mut client, "RUS", 1).await;
    drop((client, gated));
    coord.stop().await;
}
