//! Shared fixtures: an in-process coordinator on 127.0.0.1:0 with a temporary
//! store, member keys, and helpers to build and send signed snapshots.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use tally::coordinator::reconciler::Reconciler;
use tally::coordinator::server::Coordinator;
use tally::coordinator::storage::{SledStore, SnapshotStore, Storage};
use tally::item::{Item, Status};
use tally::proto::{self, snapshots_client::SnapshotsClient, submit_request};
use tally::reconcile::EngineConfig;
use tally::serial::CanonicalRule;
use tally::snapshot::{Receipt, SignedHeader, SnapshotDigest, build_snapshot, sort_items};
use tally::state::StateCode;
use tally::support::clock::Clock;
use tally::support::config::Limits;
use tally_wire::convert::{receipt_from_proto, signed_header_to_proto};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub fn state(s: &str) -> StateCode {
    StateCode::parse(s).expect("test state code")
}

/// Deterministic keys so failures are reproducible.
pub fn state_key(s: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..3].copy_from_slice(s.as_bytes());
    SigningKey::from_bytes(&seed)
}

pub fn coordinator_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A coordinator running in this process; `stop` shuts it down and releases the store.
pub struct TestCoordinator {
    pub addr: SocketAddr,
    pub store: Arc<dyn SnapshotStore>,
    pub reconciler: Option<Arc<Reconciler>>,
    pub metrics: Arc<tally::coordinator::metrics::Metrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestCoordinator {
    pub async fn start(data_dir: &Path, members: &[&str]) -> TestCoordinator {
        Self::start_with_limits(data_dir, members, Limits::default()).await
    }

    pub async fn start_with_limits(
        data_dir: &Path,
        members: &[&str],
        limits: Limits,
    ) -> TestCoordinator {
        let coordinator = assemble(data_dir, members, limits, EngineConfig::default());
        Self::serve(coordinator).await
    }

    pub async fn serve(coordinator: Coordinator) -> TestCoordinator {
        Self::serve_with(
            coordinator,
            tally::coordinator::server::ServeOptions::default(),
        )
        .await
    }

    /// Serves with TLS and access rules.
    pub async fn serve_with(
        coordinator: Coordinator,
        options: tally::coordinator::server::ServeOptions,
    ) -> TestCoordinator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve_on_with(coordinator, listener, options).await
    }

    /// Serves on a given listener, e.g. on an address clients were already
    /// told about while no coordinator was there.
    pub async fn serve_on(
        coordinator: Coordinator,
        listener: tokio::net::TcpListener,
    ) -> TestCoordinator {
        Self::serve_on_with(
            coordinator,
            listener,
            tally::coordinator::server::ServeOptions::default(),
        )
        .await
    }

    async fn serve_on_with(
        coordinator: Coordinator,
        listener: tokio::net::TcpListener,
        options: tally::coordinator::server::ServeOptions,
    ) -> TestCoordinator {
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let store = coordinator.ingestor.store().clone();
        let reconciler = coordinator.reconciler.clone();
        let metrics = coordinator.metrics.clone();
        let task = tokio::spawn(async move {
            tally::coordinator::server::serve_with(
                coordinator,
                listener,
                async {
                    let _ = rx.await;
                },
                options,
            )
            .await
            .expect("server");
        });
        TestCoordinator {
            addr,
            store,
            reconciler: Some(reconciler),
            metrics,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until `n` uploads are in progress (the coordinator counts one
    /// as it takes its upload slot): what a test waits for instead of
    /// sleeping and hoping. Panics after a minute, to bound a hang.
    pub async fn wait_for_uploads_in_flight(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = self.metrics.encode().expect("metrics");
            let in_flight = text
                .lines()
                .find_map(|l| l.strip_prefix("tally_submissions_in_flight "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            if in_flight == Some(n as f64) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{in_flight:?} uploads in flight after a minute, waiting for {n}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::connect(self.url()).await.expect("connect")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        self.reconciler = None;
        // Wait until every other handle on the store is gone, so sled's
        // lock is released before a restart on the same directory.
        for _ in 0..200 {
            if Arc::strong_count(&self.store) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Opens the store, waiting briefly if a coordinator stopped a moment ago
/// still holds sled's lock (released when its background flusher stops).
pub fn open_store(data_dir: &Path) -> SledStore {
    for _ in 0..100 {
        match SledStore::open(data_dir) {
            Ok(store) => return store,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
    panic!("store still locked after 2 s");
}

/// A coordinator on a sled store in `data_dir`, members keyed with [`state_key`].
pub fn assemble(
    data_dir: &Path,
    members: &[&str],
    limits: Limits,
    engine: EngineConfig,
) -> Coordinator {
    assemble_with_clock(
        data_dir,
        members,
        limits,
        engine,
        std::time::Duration::from_secs(3600),
        Clock::system(),
    )
}

/// As [`assemble`], reading the time from `clock` (e.g. a
/// [`Clock::manual`] a test moves instead of sleeping) and running the
/// clock-based rules every `tick`.
pub fn assemble_with_clock(
    data_dir: &Path,
    members: &[&str],
    limits: Limits,
    engine: EngineConfig,
    tick: std::time::Duration,
    clock: Clock,
) -> Coordinator {
    tally::coordinator::server::assemble_with_clock(
        Storage::on_sled(open_store(data_dir)).expect("open storage"),
        members
            .iter()
            .map(|s| (state(s), state_key(s).verifying_key())),
        coordinator_key(),
        limits,
        CanonicalRule::default(),
        engine,
        tick,
        clock,
    )
    .expect("assemble coordinator")
}

/// One row of a test inventory: (model, serial, status, counterparty).
pub type Row<'a> = (&'a str, &'a str, Status, Option<&'a str>);

pub fn items(rows: &[Row<'_>]) -> Vec<Item> {
    let rule = CanonicalRule::default();
    let mut items: Vec<Item> = rows
        .iter()
        .map(|(m, s, st, cp)| {
            Item::new(m, s, *st, "Depot 1", cp.map(state), &rule).expect("valid test item")
        })
        .collect();
    sort_items(&mut items);
    items
}

/// `n` distinct in-service launchers: 9P39 serials L000000, L000001, ...
pub fn many_items(n: usize) -> Vec<Item> {
    let rule = CanonicalRule::default();
    let mut items: Vec<Item> = (0..n)
        .map(|i| {
            Item::new(
                "9P39",
                &format!("L{i:06}"),
                Status::InService,
                "Depot 1",
                None,
                &rule,
            )
            .expect("valid item")
        })
        .collect();
    sort_items(&mut items);
    items
}

/// A signed snapshot and its leaf chunks, split every `per_chunk` leaves.
pub struct TestSnapshot {
    pub signed: SignedHeader,
    pub chunks: Vec<Vec<u8>>,
}

impl TestSnapshot {
    pub fn digest(&self) -> SnapshotDigest {
        self.signed.digest()
    }
}

pub fn snapshot(st: &str, sequence: u64, previous: SnapshotDigest, items: &[Item]) -> TestSnapshot {
    let unsigned = build_snapshot(
        state(st),
        sequence,
        1_790_000_000_000 + sequence as i64,
        previous,
        items,
    );
    TestSnapshot {
        signed: unsigned.header.sign(&state_key(st)),
        chunks: unsigned.chunks,
    }
}

pub fn header_msg(signed: &SignedHeader) -> proto::SubmitRequest {
    proto::SubmitRequest {
        part: Some(submit_request::Part::Header(signed_header_to_proto(signed))),
    }
}

pub fn chunk_msg(leaves: &[u8]) -> proto::SubmitRequest {
    proto::SubmitRequest {
        part: Some(submit_request::Part::Chunk(proto::ItemChunk {
            leaves: leaves.to_vec().into(),
        })),
    }
}

/// Sends raw messages as one Submit stream.
pub async fn send(
    client: &mut SnapshotsClient<Channel>,
    messages: Vec<proto::SubmitRequest>,
) -> Result<Receipt, tonic::Status> {
    let response = client.submit(tokio_stream::iter(messages)).await?;
    Ok(receipt_from_proto(response.get_ref()).expect("well-formed receipt"))
}

pub async fn submit(
    client: &mut SnapshotsClient<Channel>,
    snap: &TestSnapshot,
) -> Result<Receipt, tonic::Status> {
    let mut msgs = vec![header_msg(&snap.signed)];
    msgs.extend(snap.chunks.iter().map(|c| chunk_msg(c)));
    send(client, msgs).await
}

/// Everything the coordinator has stored, per state: (sequence, digest) pairs,
/// plus the equivocation count. Used to show a rejected request changed nothing.
pub fn stored_state(store: &dyn SnapshotStore) -> (BTreeMap<String, Vec<(u64, String)>>, usize) {
    let mut out = BTreeMap::new();
    for st in store.states().expect("states") {
        let list = store
            .list(st, 1, usize::MAX)
            .expect("list")
            .into_iter()
            .map(|s| (s.signed.header.sequence, s.digest.to_hex()))
            .collect();
        out.insert(st.to_string(), list);
    }
    (out, store.equivocations().expect("equivocations").len())
}

/// Downloads a stored snapshot and checks it end to end: header signature,
/// receipt signature, and the items against the signed root.
pub async fn fetch_and_verify(
    client: &mut SnapshotsClient<Channel>,
    st: &str,
    sequence: u64,
) -> (SignedHeader, Vec<u8>) {
    use tally::proto::get_snapshot_response::Part;
    let mut stream = client
        .get_snapshot(proto::GetSnapshotRequest {
            state: st.to_string(),
            sequence,
        })
        .await
        .expect("get snapshot")
        .into_inner();
    let mut info = None;
    let mut leaves = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream") {
        match msg.part.expect("part") {
            Part::Info(i) => info = Some(i),
            Part::Chunk(c) => leaves.extend_from_slice(&c.leaves),
        }
    }
    let (signed, receipt) =
        tally_wire::convert::snapshot_info_from_proto(&info.expect("info first")).expect("info");
    signed
        .verify(&state_key(st).verifying_key())
        .expect("header signature");
    assert!(
        receipt.verify(&coordinator_key().verifying_key()),
        "receipt signature"
    );
    assert_eq!(receipt.digest, signed.digest());
    let mut verifier =
        tally::snapshot::ItemStreamVerifier::new(&signed.header, CanonicalRule::default());
    verifier.push_chunk(&leaves).expect("leaves verify");
    verifier.finish().expect("count and root match");
    (signed, leaves)
}

/// Copies a directory tree (e.g. `config/` into a scratch directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every stored seizure report, oldest first, page by page.
pub async fn all_seizure_reports(url: &str) -> Vec<proto::SeizureReport> {
    let mut client = proto::seizures_client::SeizuresClient::connect(url.to_string())
        .await
        .expect("connect");
    let mut reports: Vec<proto::SeizureReport> = Vec::new();
    loop {
        let page = client
            .list_seizure_reports(proto::ListSeizureReportsRequest {
                after_id: reports.last().map_or(0, |r| r.id),
                limit: 0,
            })
            .await
            .expect("list seizure reports")
            .into_inner();
        reports.extend(page.reports);
        if !page.more {
            return reports;
        }
    }
}

/// The value of the sample whose name and labels are exactly `series` in
/// `metrics`' exposition (`None` until a labelled series first appears).
pub fn metric(metrics: &tally::coordinator::metrics::Metrics, series: &str) -> Option<f64> {
    let text = metrics.encode().expect("encode metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
