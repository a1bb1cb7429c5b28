//! Kill tests (issue 7): `tally coordinator` and `tally node submit` are
//! killed with SIGKILL at random moments and restarted on the same data
//! (the coordinator while three states submit and an operator reports
//! seized items).
//!
//! The random choices (inventories, delays) come from a seeded generator;
//! the seed is printed and can be set with `TALLY_KILL_SEED`. Without it the
//! coordinator test runs the fixed seeds [`FIXED_SEEDS`] and then one taken
//! from the clock (printed for replay), [`ROUNDS_PER_SEED`] kills each; with
//! it, that seed alone, 25 kills. `TALLY_KILL_ROUNDS` sets the kills per
//! seed and `TALLY_NODE_KILLS` the kills per export in the node test
//! (default 3). The coordinator's kill modes are cycled, not drawn, so every
//! mode happens in every run of at least five kills.
//! Timing still varies between runs, so a seed reproduces the plan, not the
//! exact interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use tally::coordinator::storage::SnapshotStore;
use tally::item::{Item, Status};
use tally::node::Outbox;
use tally::proto::{
    self, alerts_client::AlertsClient, seizures_client::SeizuresClient,
    snapshots_client::SnapshotsClient,
};
use tally::serial::CanonicalRule;
use tally::snapshot::leaf::leaves;
use tally::snapshot::{Receipt, SnapshotDigest, build_snapshot, sort_items};
use tally::support::config::CoordinatorConfig;
use tally_wire::convert::{receipt_from_proto, snapshot_info_from_proto};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::common::{self, TestSnapshot, chunk_msg, coordinator_key, header_msg, state_key};

// ---------------------------------------------------------------------------
// Seeds and settings.
// ---------------------------------------------------------------------------

fn env_number(var: &str) -> Option<u64> {
    let text = std::env::var(var).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a whole number")),
    )
}

/// Seeds the coordinator kill test always runs (unless `TALLY_KILL_SEED`
/// picks one), so that every `cargo test` covers the same plans as well as
/// a fresh one from the clock.
const FIXED_SEEDS: [u64; 2] = [20_251_208, 7];

/// Coordinator kills per seed when neither `TALLY_KILL_SEED` nor
/// `TALLY_KILL_ROUNDS` is set: three seeds of nine take about as long as the
/// single run of 25 kills this test made before.
const ROUNDS_PER_SEED: usize = 9;

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The run's seed: `TALLY_KILL_SEED`, or one taken from the clock (printed
/// either way, so a failure can be replayed).
fn seed(test: &str) -> u64 {
    let seed = env_number("TALLY_KILL_SEED").unwrap_or_else(clock_seed);
    println!("{test}: seed {seed} (replay with TALLY_KILL_SEED={seed})");
    seed
}

/// An independent generator for one purpose (`stream`) of a seeded run.
fn rng(seed: u64, stream: u64) -> TestRng {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..].copy_from_slice(&(stream.wrapping_add(1)).to_le_bytes());
    TestRng::from_seed(RngAlgorithm::XorShift, &bytes)
}

fn millis(rng: &mut TestRng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

fn now_unix_ms() -> i64 {
    tally::support::clock::system_now_unix_ms()
}

// ---------------------------------------------------------------------------
// Inventories that change every snapshot in ways that raise alerts.
// ---------------------------------------------------------------------------

const MODELS: [&str; 3] = ["9K38", "9P39", "9M39"];
const STATES: [&str; 3] = ["RUS", "KAZ", "BLR"];

#[derive(Debug, Clone)]
struct Row {
    model: &'static str,
    serial: String,
    status: Status,
    counterparty: Option<&'static str>,
}

fn initial_rows(st: &str, n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            model: MODELS[i % MODELS.len()],
            serial: format!("{st}-{i:04}"),
            status: if i % 2 == 0 {
                Status::InService
            } else {
                Status::InStorage
            },
            counterparty: None,
        })
        .collect()
}

/// A few changes of the kinds the reconciler looks for: disappearances,
/// status changes (lost, disposed, transferred), another state's serials,
/// a second spelling of one serial in the same snapshot, new items.
fn mutate(rows: &mut Vec<Row>, own: &str, rng: &mut TestRng) {
    let others: Vec<&'static str> = STATES.iter().copied().filter(|s| *s != own).collect();
    for _ in 0..rng.random_range(2..8usize) {
        let at = rng.random_range(0..rows.len());
        match rng.random_range(0..6u32) {
            0 if rows.len() > 100 => {
                rows.swap_remove(at);
            }
            1 => {
                let status = Status::ALL[rng.random_range(0..Status::ALL.len())];
                rows[at].status = status;
                rows[at].counterparty = (status == Status::TransferredOut)
                    .then(|| others[rng.random_range(0..others.len())]);
            }
            2 => {
                let j = rng.random_range(0..300usize);
                rows.push(Row {
                    model: MODELS[j % MODELS.len()],
                    serial: format!("{}-{j:04}", others[rng.random_range(0..others.len())]),
                    status: Status::InService,
                    counterparty: None,
                });
            }
            3 => {
                let mut twin = rows[at].clone();
                twin.serial = twin.serial.to_lowercase().replace('-', " ");
                rows.push(twin);
            }
            4 => {
                let j = rng.random_range(300..400usize);
                rows.push(Row {
                    model: MODELS[j % MODELS.len()],
                    serial: format!("{own}-{j:04}"),
                    status: Status::InStorage,
                    counterparty: None,
                });
            }
            _ => {
                rows[at].status = Status::Lost;
                rows[at].counterparty = None;
            }
        }
    }
    while rows.len() > 400 {
        let at = rng.random_range(0..rows.len());
        rows.swap_remove(at);
    }
}

fn to_items(rows: &[Row]) -> Vec<Item> {
    let rule = CanonicalRule::default();
    let mut items: Vec<Item> = rows
        .iter()
        .map(|r| {
            Item::new(
                r.model,
                &r.serial,
                r.status,
                "Depot 7",
                r.counterparty.map(common::state),
                &rule,
            )
            .expect("valid generated item")
        })
        .collect();
    sort_items(&mut items);
    items
}

/// Splits a chunk into `pieces` chunks at leaf boundaries, so one small
/// snapshot still arrives as several messages (room to kill mid-upload).
fn split_at_leaves(chunk: &[u8], pieces: usize) -> Vec<Vec<u8>> {
    let lens: Vec<usize> = leaves(chunk)
        .map(|l| l.expect("leaf of a built snapshot").1.len())
        .collect();
    let per = lens.len().div_ceil(pieces.max(1)).max(1);
    let mut out = Vec::new();
    let mut at = 0;
    for group in lens.chunks(per) {
        let n: usize = group.iter().sum();
        out.push(chunk[at..at + n].to_vec());
        at += n;
    }
    out
}

// ---------------------------------------------------------------------------
// `tally coordinator` as a child process.
// ---------------------------------------------------------------------------

/// Keys and a coordinator configuration (insecure, loopback, free port) in `dir`.
fn write_coordinator_config(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    tally::support::keys::write_key_pair(&keys, "coordinator", &coordinator_key()).expect("key");
    let mut members = String::new();
    for st in STATES {
        tally::support::keys::write_key_pair(&keys, st, &state_key(st)).expect("key");
        members.push_str(&format!(
            "\n[[members]]\nstate = \"{st}\"\npublic_key_file = \"keys/{st}.pub\"\n"
        ));
    }
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ninsecure = true\ndata_dir = \"data\"\n\
             key_file = \"keys/coordinator.key\"\n\n[shutdown]\ngrace_seconds = 1\n\n\
             [reconcile]\ncheckpoint_seconds = 1\n{members}"
        ),
    )
    .expect("write config");
    config
}

struct CoordinatorProcess {
    child: Child,
    url: String,
    log: PathBuf,
}

impl CoordinatorProcess {
    /// Starts `tally coordinator` and waits until it listens: the store
    /// opened and the reconciliation state was rebuilt.
    fn start(config: &Path, log: PathBuf) -> CoordinatorProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["--log-format", "json", "coordinator", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tally coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| {
                    let status = child.try_wait();
                    panic!(
                        "the coordinator did not come up on its data directory ({e}; exit: {status:?}); log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
            if let Some(addr) = line.strip_prefix("coordinator listening on ") {
                return CoordinatorProcess {
                    child,
                    url: format!("http://{addr}"),
                    log,
                };
            }
        }
    }

    fn sigkill(&mut self) {
        // `Child::kill` sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    fn sigterm_and_wait(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The number of alert changes the start-up rebuild had to record (from
    /// its log line), i.e. how far the persisted alerts lagged the snapshots.
    /// Whether start-up continued from an engine checkpoint (written by the
    /// previous process before it was killed).
    fn started_from_checkpoint(&self) -> bool {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("reconciliation state rebuilt"))
            .is_some_and(|l| l.contains("\"from_checkpoint\":true"))
    }

    fn startup_changes(&self) -> u64 {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("reconciliation state rebuilt"))
            .and_then(|l| l.split("\"recorded_changes\":").nth(1))
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .unwrap_or_else(|| panic!("no rebuild line in the log:\n{log}"))
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Clients: one per state, with an outbox of signed snapshots.
// ---------------------------------------------------------------------------

struct Entry {
    snap: TestSnapshot,
    receipt: Option<Receipt>,
}

struct Client {
    st: &'static str,
    rows: Vec<Row>,
    outbox: Vec<Entry>,
    rng: TestRng,
    as_of_base: i64,
}

/// What clients report to the kill controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Part of an upload is sent; more follows after a pause.
    MidUpload,
    /// The last item chunk is sent; the coordinator verifies, stores and
    /// reconciles before it answers.
    Sent,
    /// A receipt arrived.
    Receipt,
}

impl Client {
    fn new(st: &'static str, seed: u64, stream: u64) -> Client {
        Client {
            st,
            rows: initial_rows(st, 250),
            outbox: Vec::new(),
            rng: rng(seed, stream),
            // Recent, so no clock-based rule fires (the grace period is a week).
            as_of_base: now_unix_ms() - 3_600_000,
        }
    }

    /// The oldest entry without a receipt, after signing a new one if all
    /// have receipts (at most one pending at a time, like a node).
    fn next_to_send(&mut self) -> usize {
        if let Some(last) = self.outbox.last()
            && last.receipt.is_none()
        {
            return self.outbox.len() - 1;
        }
        if !self.outbox.is_empty() {
            mutate(&mut self.rows, self.st, &mut self.rng);
        }
        let sequence = self.outbox.len() as u64 + 1;
        let previous = self
            .outbox
            .last()
            .map_or(SnapshotDigest::GENESIS, |e| e.snap.digest());
        let unsigned = build_snapshot(
            common::state(self.st),
            sequence,
            self.as_of_base + sequence as i64 * 1000,
            previous,
            &to_items(&self.rows),
        );
        self.outbox.push(Entry {
            snap: TestSnapshot {
                signed: unsigned.header.sign(&state_key(self.st)),
                chunks: unsigned.chunks,
            },
            receipt: None,
        });
        self.outbox.len() - 1
    }

    fn last_sequence(&self) -> u64 {
        self.outbox.len() as u64
    }

    fn pending(&self) -> usize {
        self.outbox.iter().filter(|e| e.receipt.is_none()).count()
    }

    /// Submits until `stop` is set or a call fails; returns the failure.
    async fn run(
        mut self,
        url: String,
        stop: Arc<AtomicBool>,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> (Client, Option<tonic::Status>) {
        let channel = match Channel::from_shared(url).expect("url").connect().await {
            Ok(c) => c,
            Err(e) => return (self, Some(tonic::Status::unavailable(e.to_string()))),
        };
        while !stop.load(Ordering::SeqCst) {
            let at = self.next_to_send();
            let pieces_wanted = self.rng.random_range(1..5usize);
            let pace = millis(&mut self.rng, 1..12);
            let pieces: Vec<Vec<u8>> = self.outbox[at]
                .snap
                .chunks
                .iter()
                .flat_map(|c| split_at_leaves(c, pieces_wanted))
                .collect();
            let signed = self.outbox[at].snap.signed.clone();
            match upload(channel.clone(), signed, pieces, pace, progress.clone()).await {
                Ok(receipt) => {
                    let entry = &mut self.outbox[at];
                    assert_eq!(receipt.digest, entry.snap.digest(), "{} receipt", self.st);
                    assert!(receipt.verify(&coordinator_key().verifying_key()));
                    entry.receipt = Some(receipt);
                    let _ = progress.send(Progress::Receipt);
                }
                Err(status) => return (self, Some(status)),
            }
            let pause = millis(&mut self.rng, 5..30);
            tokio::time::sleep(pause).await;
        }
        (self, None)
    }
}

/// An operator who reports a seized item now and then while the nodes
/// submit, so that report times interleave with acceptance times and the
/// clean rebuild checks that reports are replayed where they came.
struct Operator {
    rng: TestRng,
    /// Ids of the reports whose answer arrived.
    acknowledged: Vec<u64>,
}

impl Operator {
    /// Reports until `stop` is set or a call fails; returns the failure.
    async fn run(
        mut self,
        url: String,
        stop: Arc<AtomicBool>,
    ) -> (Operator, Option<tonic::Status>) {
        let mut client = match SeizuresClient::connect(url).await {
            Ok(c) => c,
            Err(e) => return (self, Some(tonic::Status::unavailable(e.to_string()))),
        };
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(millis(&mut self.rng, 10..80)).await;
            // A serial some state holds or held (see `initial_rows`).
            let st = STATES[self.rng.random_range(0..STATES.len())];
            let i = self.rng.random_range(0..260usize);
            let item = proto::SeizedItem {
                model: MODELS[i % MODELS.len()].into(),
                serial: format!("{st}-{i:04}"),
                seized_at_unix_ms: now_unix_ms() - 60_000,
                place: "checkpoint 14".into(),
                note: String::new(),
            };
            match client
                .report_seizures(proto::ReportSeizuresRequest { items: vec![item] })
                .await
            {
                Ok(answer) => self.acknowledged.push(answer.into_inner().report_id),
                Err(status) => return (self, Some(status)),
            }
        }
        (self, None)
    }
}

/// Every acknowledged seizure report is stored.
async fn check_seizure_reports(url: &str, operator: &Operator, context: &str) {
    let stored: BTreeSet<u64> = crate::common::all_seizure_reports(url)
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    for id in &operator.acknowledged {
        assert!(
            stored.contains(id),
            "{context}: acknowledged seizure report {id} is not stored"
        );
    }
}

/// One Submit call: the header, then `pieces` with `pace` between them.
async fn upload(
    channel: Channel,
    signed: tally::snapshot::SignedHeader,
    pieces: Vec<Vec<u8>>,
    pace: Duration,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Receipt, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        if tx.send(header_msg(&signed)).await.is_err() {
            return;
        }
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            tokio::time::sleep(pace).await;
            if tx.send(chunk_msg(&piece)).await.is_err() {
                return;
            }
            let _ = progress.send(if i + 1 == n {
                Progress::Sent
            } else {
                Progress::MidUpload
            });
        }
    });
    let result = SnapshotsClient::new(channel)
        .submit(ReceiverStream::new(rx))
        .await;
    feeder.abort();
    let response = result?;
    Ok(receipt_from_proto(response.get_ref()).expect("well-formed receipt"))
}

// ---------------------------------------------------------------------------
// What a restarted coordinator must show.
// ---------------------------------------------------------------------------

async fn list_all(client: &mut SnapshotsClient<Channel>, st: &str) -> Vec<proto::SnapshotInfo> {
    let mut out: Vec<proto::SnapshotInfo> = Vec::new();
    loop {
        let page = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state: st.into(),
                from_sequence: out.len() as u64 + 1,
                limit: 0,
            })
            .await
            .expect("list snapshots")
            .into_inner();
        if page.snapshots.is_empty() {
            assert_eq!(
                page.latest_sequence,
                out.len() as u64,
                "{st}: listing ends at the head"
            );
            return out;
        }
        out.extend(page.snapshots);
    }
}

/// Every state's chain is whole and linked, holds only what its client
/// signed, includes everything the client has a receipt for (with that
/// receipt), and every listed snapshot downloads complete and verifies.
/// Returns how many snapshots were downloaded and verified.
///
/// Downloads are verified for snapshots not verified before (`verified`
/// holds the highest sequence verified per state) plus `resample` older ones
/// per state, chosen by `rng`: re-downloading every snapshot after every
/// kill grows with the square of the rounds.
async fn check_snapshots(
    url: &str,
    clients: &[Client],
    context: &str,
    verified: &mut BTreeMap<&'static str, u64>,
    resample: usize,
    rng: &mut TestRng,
) -> usize {
    let mut client = SnapshotsClient::connect(url.to_string())
        .await
        .expect("connect");
    let mut downloads = 0;
    for c in clients {
        let listed = list_all(&mut client, c.st).await;
        let done = verified.get(c.st).copied().unwrap_or(0);
        let mut again: BTreeSet<u64> = BTreeSet::new();
        for _ in 0..resample.min(done as usize) {
            again.insert(rng.random_range(1..=done));
        }
        let mut previous = SnapshotDigest::GENESIS;
        for (i, info) in listed.iter().enumerate() {
            let (signed, receipt) = snapshot_info_from_proto(info).expect("snapshot info");
            let sequence = i as u64 + 1;
            assert_eq!(
                signed.header.sequence, sequence,
                "{context}: {} sequences",
                c.st
            );
            assert_eq!(
                signed.header.previous_digest, previous,
                "{context}: {} {sequence} links to its predecessor",
                c.st
            );
            let entry = c.outbox.get(i).unwrap_or_else(|| {
                panic!(
                    "{context}: {} {sequence} stored but never signed by the client",
                    c.st
                )
            });
            assert_eq!(
                signed.digest(),
                entry.snap.digest(),
                "{context}: {} {sequence}",
                c.st
            );
            if let Some(issued) = &entry.receipt {
                assert_eq!(
                    &receipt, issued,
                    "{context}: {} {sequence}: stored receipt",
                    c.st
                );
            }
            if sequence > done || again.contains(&sequence) {
                let (fetched, _) = common::fetch_and_verify(&mut client, c.st, sequence).await;
                assert_eq!(fetched.digest(), entry.snap.digest());
                downloads += 1;
            }
            previous = signed.digest();
        }
        verified.insert(c.st, listed.len() as u64);
        let acknowledged = c.outbox.iter().filter(|e| e.receipt.is_some()).count();
        assert!(
            listed.len() >= acknowledged,
            "{context}: {} has receipts up to {acknowledged} but the coordinator has {}",
            c.st,
            listed.len()
        );
    }
    downloads
}

/// The alerts whose condition currently holds, as the coordinator serves
/// them, without what differs between two histories with the same outcome
/// (ids, times, occurrence links, history). Sorted.
async fn served_alerts(url: &str) -> Vec<String> {
    let mut client = AlertsClient::connect(url.to_string())
        .await
        .expect("connect");
    let mut alerts = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_alerts(proto::ListAlertsRequest {
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list alerts")
            .into_inner();
        alerts.extend(page.alerts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    comparable(alerts)
}

fn comparable(alerts: Vec<proto::Alert>) -> Vec<String> {
    let mut out: Vec<String> = alerts
        .into_iter()
        .filter(|a| a.status != proto::AlertStatus::Cleared as i32)
        .map(|mut a| {
            a.id = 0;
            a.opened_at_unix_ms = 0;
            a.updated_at_unix_ms = 0;
            a.previous_occurrence = 0;
            a.history.clear();
            format!("{a:?}")
        })
        .collect();
    out.sort();
    out
}

/// The alerts a clean rebuild finds: a copy of the (stopped) coordinator's
/// data directory with every alert tree dropped, opened the way the
/// coordinator opens it, so the alerts come from the stored snapshots alone.
fn clean_rebuild_alerts(config_path: &Path, data: &Path, scratch: &Path) -> Vec<String> {
    let _ = std::fs::remove_dir_all(scratch);
    common::copy_dir(data, scratch);
    // Not from the engine checkpoint: from the snapshots alone.
    let _ = std::fs::remove_file(scratch.join(tally::coordinator::reconciler::CHECKPOINT_FILE));
    let config = CoordinatorConfig::load(config_path).expect("config");
    let store = common::open_store(scratch);
    for tree in tally::coordinator::storage::alerts::ALERT_TREES {
        store.db().drop_tree(tree).expect("drop alert tree");
    }
    let coordinator = tally::coordinator::server::assemble(
        tally::coordinator::storage::Storage::on_sled(store).expect("open storage"),
        config.members.iter().map(|m| (m.state, m.public_key)),
        coordinator_key(),
        config.limits.clone(),
        config.canonical.clone(),
        config.engine_config(),
        Duration::from_secs(3600),
    )
    .expect("clean rebuild");
    let alerts = coordinator
        .reconciler
        .alerts()
        .current_alerts()
        .expect("alerts");
    comparable(
        alerts
            .iter()
            .map(tally_wire::alerts::alert_to_proto)
            .collect(),
    )
}

#[track_caller]
fn assert_same_alerts(served: &[String], rebuilt: &[String], context: &str) {
    if served != rebuilt {
        let s: BTreeSet<&String> = served.iter().collect();
        let r: BTreeSet<&String> = rebuilt.iter().collect();
        let only_served: Vec<_> = s.difference(&r).take(5).collect();
        let only_rebuilt: Vec<_> = r.difference(&s).take(5).collect();
        panic!(
            "{context}: served alerts ({}) differ from a clean rebuild ({}).\n\
             only served: {only_served:#?}\nonly rebuilt: {only_rebuilt:#?}",
            served.len(),
            rebuilt.len()
        );
    }
}

// ---------------------------------------------------------------------------
// 1. The coordinator.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillMode {
    /// After a random delay, wherever the clients are.
    Anytime,
    /// While an upload is half sent.
    DuringUpload,
    /// Just after an upload's last chunk: while the coordinator verifies,
    /// stores and reconciles.
    DuringStore,
    /// As soon as a client holds a receipt.
    AfterReceipt,
    /// About when the periodic engine checkpoint (every second here) is
    /// being written: the next start continues from the last complete one.
    AroundCheckpoint,
}

impl KillMode {
    /// The order the kills cycle through. `Anytime` comes first so that the
    /// first kill lands (0.35 s at most after start) before the first
    /// checkpoint (due after 1 s): the next start must rebuild from the
    /// snapshots alone.
    const CYCLE: [KillMode; 5] = [
        KillMode::Anytime,
        KillMode::DuringUpload,
        KillMode::DuringStore,
        KillMode::AfterReceipt,
        KillMode::AroundCheckpoint,
    ];
}

/// The modification time of the engine checkpoint in `data`, if written.
fn checkpoint_mtime(data: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(data.join(tally::coordinator::reconciler::CHECKPOINT_FILE))
        .and_then(|m| m.modified())
        .ok()
}

/// Errors a client may see when the coordinator dies under it.
fn is_connection_loss(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_at_random_moments_loses_nothing_and_shows_nothing_partial() {
    let (seeds, default_rounds) = match env_number("TALLY_KILL_SEED") {
        Some(seed) => (vec![seed], 25),
        None => {
            let mut seeds = FIXED_SEEDS.to_vec();
            seeds.push(clock_seed());
            (seeds, ROUNDS_PER_SEED)
        }
    };
    let rounds = env_number("TALLY_KILL_ROUNDS").map_or(default_rounds, |n| n as usize);
    assert!(
        rounds >= KillMode::CYCLE.len(),
        "TALLY_KILL_ROUNDS={rounds}: at least {} kills, one per mode",
        KillMode::CYCLE.len()
    );
    for seed in seeds {
        println!("coordinator kill test: seed {seed} (replay with TALLY_KILL_SEED={seed})");
        coordinator_kill_run(seed, rounds).await;
    }
}

/// One seeded run of the coordinator kill test: `rounds` SIGKILLs, each
/// followed by a restart and the checks, then convergence.
async fn coordinator_kill_run(seed: u64, rounds: usize) {
    let started = Instant::now();
    let mut plan = rng(seed, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_coordinator_config(dir.path());
    let data = dir.path().join("data");
    let scratch = dir.path().join("rebuild");

    let mut clients: Vec<Client> = STATES
        .iter()
        .enumerate()
        .map(|(i, st)| Client::new(st, seed, i as u64 + 1))
        .collect();
    let mut operator = Operator {
        rng: rng(seed, STATES.len() as u64 + 1),
        acknowledged: Vec::new(),
    };
    let mut coordinator = CoordinatorProcess::start(&config, dir.path().join("log-0"));
    let mut by_mode: BTreeMap<KillMode, usize> = BTreeMap::new();
    let mut unacknowledged_but_stored = 0;
    let mut restarts_that_fixed_alerts = 0;
    let mut restarts_from_checkpoint = 0;
    let mut verified = 0;
    let mut verified_upto = BTreeMap::new();
    let mut rebuild_time = Duration::ZERO;

    for round in 1..=rounds {
        let mode = KillMode::CYCLE[(round - 1) % KillMode::CYCLE.len()];
        let checkpoint_before = checkpoint_mtime(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress) = mpsc::unbounded_channel();
        let tasks: Vec<_> = clients
            .drain(..)
            .map(|c| {
                tokio::spawn(c.run(coordinator.url.clone(), stop.clone(), progress_tx.clone()))
            })
            .collect();
        drop(progress_tx);
        let reporting = tokio::spawn(operator.run(coordinator.url.clone(), stop.clone()));

        // Let the clients get going, then wait for the moment to kill.
        tokio::time::sleep(millis(&mut plan, 0..100)).await;
        let wanted = match mode {
            KillMode::Anytime | KillMode::AroundCheckpoint => None,
            KillMode::DuringUpload => Some(Progress::MidUpload),
            KillMode::DuringStore => Some(Progress::Sent),
            KillMode::AfterReceipt => Some(Progress::Receipt),
        };
        let jitter = match mode {
            KillMode::Anytime => millis(&mut plan, 0..250),
            KillMode::DuringUpload => millis(&mut plan, 0..4),
            KillMode::DuringStore => millis(&mut plan, 0..8),
            KillMode::AfterReceipt => Duration::ZERO,
            KillMode::AroundCheckpoint => millis(&mut plan, 900..1_100),
        };
        // The moment a mode waits for must come: a kill that only happened
        // "anytime" must not be counted as a kill mid-upload, mid-store or
        // after a receipt.
        if let Some(wanted) = wanted {
            while progress.try_recv().is_ok() {}
            let reached = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(p) = progress.recv().await {
                    if p == wanted {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(
                reached,
                Ok(true),
                "round {round} ({mode:?}, seed {seed}): no client reached {wanted:?} \
                 (Err: not within 10 s; false: every client stopped)"
            );
        }
        // Around a checkpoint: first wait for the running process to write
        // one (a new modification time), so the kill comes after a complete
        // checkpoint and about when the next is being written; the next
        // start must continue from one.
        if mode == KillMode::AroundCheckpoint {
            let deadline = Instant::now() + Duration::from_secs(10);
            while checkpoint_mtime(&data) == checkpoint_before {
                assert!(
                    Instant::now() < deadline,
                    "round {round} (seed {seed}): no engine checkpoint written within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if !jitter.is_zero() {
            tokio::time::sleep(jitter).await;
        }
        coordinator.sigkill();
        stop.store(true, Ordering::SeqCst);
        *by_mode.entry(mode).or_default() += 1;
        let checkpoint_at_kill = checkpoint_mtime(&data).is_some();

        for task in tasks {
            let (client, failure) = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("client stops after the kill")
                .expect("client task");
            if let Some(status) = failure {
                assert!(
                    is_connection_loss(&status),
                    "round {round} (seed {seed}): {} got {status:?}, not a lost connection",
                    client.st
                );
            }
            clients.push(client);
        }
        let (reported, failure) = tokio::time::timeout(Duration::from_secs(20), reporting)
            .await
            .expect("operator stops after the kill")
            .expect("operator task");
        if let Some(status) = failure {
            assert!(
                is_connection_loss(&status),
                "round {round} (seed {seed}): a seizure report got {status:?}, not a lost connection"
            );
        }
        operator = reported;

        // The alerts a clean rebuild finds, from a copy of what the kill left.
        let rebuild_started = Instant::now();
        let rebuilt = clean_rebuild_alerts(&config, &data, &scratch);
        rebuild_time += rebuild_started.elapsed();

        coordinator = CoordinatorProcess::start(&config, dir.path().join(format!("log-{round}")));
        if coordinator.startup_changes() > 0 {
            restarts_that_fixed_alerts += 1;
        }
        let from_checkpoint = coordinator.started_from_checkpoint();
        if from_checkpoint {
            restarts_from_checkpoint += 1;
        }
        // A kill after a complete checkpoint was seen must be followed by a
        // start that uses it (an older checkpoint stays valid: chains only
        // grow); without one there is nothing to continue from.
        if mode == KillMode::AroundCheckpoint {
            assert!(
                from_checkpoint,
                "round {round} (seed {seed}): a checkpoint was written before the kill, \
                 yet the restart rebuilt from the snapshots alone; log:\n{}",
                std::fs::read_to_string(&coordinator.log).unwrap_or_default()
            );
        }
        assert!(
            checkpoint_at_kill || !from_checkpoint,
            "round {round} (seed {seed}): started from a checkpoint that was never written"
        );
        let context = format!("after kill {round} ({mode:?}, seed {seed})");
        verified += check_snapshots(
            &coordinator.url,
            &clients,
            &context,
            &mut verified_upto,
            3,
            &mut plan,
        )
        .await;
        check_seizure_reports(&coordinator.url, &operator, &context).await;
        assert_same_alerts(&served_alerts(&coordinator.url).await, &rebuilt, &context);

        // Snapshots the kill cut off from their receipt, now stored: the
        // client resubmits them and must get the stored receipt.
        let mut probe = SnapshotsClient::connect(coordinator.url.clone())
            .await
            .expect("connect");
        for c in &clients {
            let listed = list_all(&mut probe, c.st).await.len();
            if c.pending() > 0 && listed == c.outbox.len() {
                unacknowledged_but_stored += 1;
            }
        }
    }

    // Every client resubmits its outbox to a coordinator left running.
    for c in clients.iter_mut() {
        let mut client = SnapshotsClient::connect(coordinator.url.clone())
            .await
            .expect("connect");
        for entry in c.outbox.iter_mut().filter(|e| e.receipt.is_none()) {
            let receipt = common::submit(&mut client, &entry.snap)
                .await
                .unwrap_or_else(|s| panic!("{} resubmission refused: {s:?}", c.st));
            assert_eq!(receipt.digest, entry.snap.digest());
            entry.receipt = Some(receipt);
        }
    }
    let context = format!("after convergence (seed {seed})");
    check_seizure_reports(&coordinator.url, &operator, &context).await;
    // At the end, every stored snapshot is downloaded and verified once more.
    verified += check_snapshots(
        &coordinator.url,
        &clients,
        &context,
        &mut BTreeMap::new(),
        0,
        &mut plan,
    )
    .await;
    let mut head = SnapshotsClient::connect(coordinator.url.clone())
        .await
        .expect("connect");
    for c in &clients {
        let listed = head
            .list_snapshots(proto::ListSnapshotsRequest {
                state: c.st.into(),
                from_sequence: 1,
                limit: 1,
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.latest_sequence, c.last_sequence(), "{}", c.st);
    }
    // The alerts as reconciled one submission at a time must be those of a
    // rebuild from the stored snapshots.
    let live = served_alerts(&coordinator.url).await;
    coordinator.sigterm_and_wait();
    let rebuilt = clean_rebuild_alerts(&config, &data, &scratch);
    assert_same_alerts(&live, &rebuilt, &context);
    let store = common::open_store(&data);
    assert!(
        store.equivocations().expect("equivocations").is_empty(),
        "a resubmitted outbox was taken for a second history"
    );
    let kinds: BTreeSet<String> = live
        .iter()
        .filter_map(|a| {
            a.split("kind: \"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect();
    let snapshots: u64 = clients.iter().map(Client::last_sequence).sum();
    let restarts_rebuilt = rounds - restarts_from_checkpoint;
    println!(
        "coordinator kill test: {rounds} SIGKILLs {by_mode:?}, {snapshots} snapshots accepted, \
         {verified} downloads verified, {unacknowledged_but_stored} snapshots stored without their \
         receipt reaching the client, {} seizure reports acknowledged, {restarts_that_fixed_alerts} restarts recorded alert changes, \
         {restarts_from_checkpoint} restarts continued from the engine checkpoint and \
         {restarts_rebuilt} rebuilt from the snapshots alone, \
         {} open alerts of kinds {kinds:?}, {:.1} s ({:.1} s of it in clean rebuilds)",
        operator.acknowledged.len(),
        live.len(),
        started.elapsed().as_secs_f64(),
        rebuild_time.as_secs_f64()
    );

    // Every mode the test claims to exercise happened (the modes cycle, and
    // each waited-for moment was reached, so this fails only if the
    // schedule or the waiting is broken).
    for mode in KillMode::CYCLE {
        assert!(
            by_mode.get(&mode).is_some_and(|n| *n > 0),
            "seed {seed}: no kill in mode {mode:?} ({by_mode:?})"
        );
    }
    // Both ways of starting were exercised: continuing from a checkpoint
    // (guaranteed by the `AroundCheckpoint` kills) and rebuilding from the
    // snapshots alone (the first kill comes before any checkpoint).
    assert!(
        restarts_from_checkpoint > 0,
        "seed {seed}: no restart continued from the engine checkpoint"
    );
    assert!(
        restarts_rebuilt > 0,
        "seed {seed}: every restart continued from a checkpoint; none rebuilt from the snapshots"
    );
    // Seizure reports were made and acknowledged, so `check_seizure_reports`
    // after each restart checked something.
    assert!(
        !operator.acknowledged.is_empty(),
        "seed {seed}: no seizure report was acknowledged"
    );
}

// ---------------------------------------------------------------------------
// 2. The node.
// ---------------------------------------------------------------------------

const NODE_STATE: &str = "KGZ";

/// Keys and a node configuration sending to `url`, with the outbox in
/// `dir/outbox` (shared by every configuration written here).
fn write_node_config(dir: &Path, name: &str, url: &str) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.join(format!("{NODE_STATE}.key")).exists() {
        tally::support::keys::write_key_pair(&keys, NODE_STATE, &state_key(NODE_STATE))
            .expect("key");
        tally::support::keys::write_key_pair(&keys, "coordinator", &coordinator_key())
            .expect("key");
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "insecure = true\nstate = '{NODE_STATE}'\nkey_file = 'keys/{NODE_STATE}.key'\n\
             coordinator = '{url}'\noutbox_dir = 'outbox'\n\
             coordinator_public_key_file = 'keys/coordinator.pub'\n\
             [retry]\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\nmax_attempts = 0\n"
        ),
    )
    .expect("write node config");
    path
}

/// An export of `n` launchers whose serials carry `tag`.
fn write_node_export(dir: &Path, tag: usize, n: usize) -> PathBuf {
    let mut text = String::from("model,serial,status,site,counterparty\n");
    for i in 0..n {
        text.push_str(&format!("9P39,N{tag}-{i:05},in_service,Depot 2,\n"));
    }
    let path = dir.join(format!("export-{tag}.csv"));
    std::fs::write(&path, text).expect("write export");
    path
}

/// A slow link to `upstream`: at most 2 KiB from the node every `pause`, so
/// an upload takes long enough to be killed half-way.
async fn slow_relay(listener: tokio::net::TcpListener, upstream: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let (mut in_read, mut in_write) = inbound.into_split();
            let (mut out_read, mut out_write) = outbound.into_split();
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
            });
            let mut buf = vec![0u8; 2048];
            loop {
                match in_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = out_write.shutdown().await;
            let _ = back.await;
        });
    }
}

/// `tally node submit` running, with its stdout lines.
struct NodeProcess {
    child: Child,
    lines: std_mpsc::Receiver<String>,
}

impl NodeProcess {
    fn start(config: &Path, export: &Path) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            // The first run may find the coordinator down with an empty
            // outbox: KGZ has never submitted, so say it is a new chain.
            .args(["node", "submit", "--new-chain", "--config"])
            .arg(config)
            .arg(export)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tally node submit");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProcess { child, lines }
    }

    /// Waits for a stdout line containing `text`.
    fn wait_for_line(&self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no line with {text:?} from tally node submit ({e})"));
            if line.contains(text) {
                return line;
            }
        }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything the outbox and the coordinator showed so far, checked after
/// every run of the node.
struct NodeHistory {
    /// Export SHA-256 → (sequence, digest) of the snapshot signed from it.
    signed: BTreeMap<[u8; 32], (u64, SnapshotDigest)>,
}

/// Where a killed run had got to, judged from the outbox and the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NodeStage {
    NotSigned,
    SignedNotStored,
    StoredNoReceiptRecorded,
    Accepted,
}

impl NodeHistory {
    /// Checks the outbox in `dir` and the coordinator's store: the outbox
    /// is a gapless linked chain, one snapshot per export, every export keeps
    /// the snapshot first signed for it, the coordinator holds a prefix of
    /// that chain and no equivocation. Returns the stage of `export`.
    fn check(
        &mut self,
        dir: &Path,
        store: &dyn SnapshotStore,
        export: &Path,
        context: &str,
    ) -> NodeStage {
        let outbox = open_outbox(&dir.join("outbox"));
        let entries = outbox.entries().expect("outbox entries");
        drop(outbox);
        let mut previous = SnapshotDigest::GENESIS;
        let mut exports = BTreeSet::new();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.sequence(),
                i as u64 + 1,
                "{context}: outbox skips a sequence"
            );
            assert_eq!(
                e.signed.header.previous_digest, previous,
                "{context}: outbox chain"
            );
            previous = e.digest();
            assert!(
                exports.insert(e.export_sha256),
                "{context}: one export signed twice (sequence {})",
                e.sequence()
            );
            let first = *self
                .signed
                .entry(e.export_sha256)
                .or_insert((e.sequence(), e.digest()));
            assert_eq!(
                first,
                (e.sequence(), e.digest()),
                "{context}: an export was signed again after a kill"
            );
        }
        for (sequence, _) in self.signed.values() {
            assert!(
                *sequence <= entries.len() as u64,
                "{context}: signed sequence {sequence} vanished from the outbox"
            );
        }
        let stored = store
            .list(common::state(NODE_STATE), 1, usize::MAX)
            .expect("list");
        assert!(
            stored.len() <= entries.len(),
            "{context}: stored more than signed"
        );
        for (s, e) in stored.iter().zip(&entries) {
            assert_eq!(
                s.digest,
                e.digest(),
                "{context}: stored differs from signed"
            );
            if let Some(r) = &e.receipt {
                assert_eq!(r, &s.receipt, "{context}: recorded receipt");
            }
        }
        for e in &entries {
            assert!(
                e.receipt.is_none() || e.sequence() <= stored.len() as u64,
                "{context}: receipt recorded for a snapshot the coordinator lacks"
            );
        }
        assert!(
            store.equivocations().expect("equivocations").is_empty(),
            "{context}"
        );
        let sha: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(std::fs::read(export).expect("export")).into()
        };
        match entries.iter().find(|e| e.export_sha256 == sha) {
            None => NodeStage::NotSigned,
            Some(e) if e.receipt.is_some() => NodeStage::Accepted,
            Some(e) if e.sequence() <= stored.len() as u64 => NodeStage::StoredNoReceiptRecorded,
            Some(_) => NodeStage::SignedNotStored,
        }
    }
}

/// Opens the outbox, waiting if the killed node's lock is still held.
fn open_outbox(dir: &Path) -> Outbox {
    for _ in 0..100 {
        match Outbox::open(dir) {
            Ok(outbox) => return outbox,
            Err(e) if e.to_string().contains("is in use by another tally process") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the outbox does not open after a kill: {e}"),
        }
    }
    panic!("outbox still locked after 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_between_signing_and_sending_resends_the_same_snapshot_and_skips_nothing() {
    let started = Instant::now();
    let seed = seed("node kill test");
    let kills_per_export = env_number("TALLY_NODE_KILLS").unwrap_or(3);
    let mut plan = rng(seed, 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = common::TestCoordinator::start(&dir.path().join("coord"), &[NODE_STATE]).await;
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let relay_url = format!("http://{}", relay.local_addr().expect("addr"));
    let relay_task = tokio::spawn(slow_relay(relay, coord.addr));
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let cfg_down = write_node_config(dir.path(), "down", &format!("http://{down}"));
    let cfg_slow = write_node_config(dir.path(), "slow", &relay_url);
    let cfg_fast = write_node_config(dir.path(), "fast", &coord.url());
    let exports: Vec<PathBuf> = (1..=6)
        .map(|tag| write_node_export(dir.path(), tag, 2000))
        .collect();
    let mut history = NodeHistory {
        signed: BTreeMap::new(),
    };
    let mut stages: BTreeMap<NodeStage, usize> = BTreeMap::new();
    let mut kills = 0;
    let store = coord.store.clone();

    // The coordinator is down: the node signs, stores, and retries; killed
    // while it retries, then run again with the same export, it signs
    // nothing new.
    for (i, expected) in [
        (0, "as sequence 1"),
        (0, "already signed as sequence 1"),
        (1, "as sequence 2"),
    ] {
        let mut node = NodeProcess::start(&cfg_down, &exports[i]);
        node.wait_for_line(expected);
        tokio::time::sleep(millis(&mut plan, 0..100)).await;
        node.sigkill();
        kills += 1;
        let stage = history.check(dir.path(), store.as_ref(), &exports[i], "coordinator down");
        assert_eq!(stage, NodeStage::SignedNotStored);
        *stages.entry(stage).or_default() += 1;
    }

    // Killed at random moments over a fast and a slow link (while parsing,
    // signing, sending, or after the coordinator stored but before the
    // receipt was recorded), then run to the end.
    for (i, export) in exports.iter().enumerate().skip(1) {
        for attempt in 1..=kills_per_export {
            let config = if plan.random_bool(0.5) {
                &cfg_slow
            } else {
                &cfg_fast
            };
            let mut node = NodeProcess::start(config, export);
            tokio::time::sleep(millis(&mut plan, 0..500)).await;
            let finished = node.child.try_wait().expect("try_wait");
            node.sigkill();
            if finished.is_none() {
                kills += 1;
            }
            let context = format!("export {} kill {attempt} (seed {seed})", i + 1);
            let stage = history.check(dir.path(), store.as_ref(), export, &context);
            *stages.entry(stage).or_default() += 1;
        }
        // (If a killed run got as far as recording the receipt, this run
        // only finds the export already signed and has nothing to send.)
        let mut node = NodeProcess::start(&cfg_fast, export);
        let status = tokio::task::spawn_blocking(move || {
            let status = node.child.wait().expect("wait");
            drop(node);
            status
        })
        .await
        .expect("wait task");
        assert!(status.success(), "tally node submit failed: {status:?}");
        let context = format!("export {} completed (seed {seed})", i + 1);
        assert_eq!(
            history.check(dir.path(), store.as_ref(), export, &context),
            NodeStage::Accepted
        );
    }

    let outbox = open_outbox(&dir.path().join("outbox"));
    let entries = outbox.entries().expect("entries");
    assert_eq!(entries.len(), exports.len(), "one snapshot per export");
    assert!(entries.iter().all(|e| e.receipt.is_some()));
    let stored = store
        .list(common::state(NODE_STATE), 1, usize::MAX)
        .expect("list");
    assert_eq!(stored.len(), exports.len());
    relay_task.abort();
    coord.stop().await;
    println!(
        "node kill test: {kills} SIGKILLs, stages at the kills {stages:?}, {} exports, {:.1} s",
        exports.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// 3. Recovery: unreadable derived state does not keep the coordinator down.
// ---------------------------------------------------------------------------

fn current_alerts(coord: &common::TestCoordinator) -> Vec<String> {
    let alerts = coord
        .reconciler
        .as_ref()
        .expect("running")
        .alerts()
        .current_alerts()
        .expect("alerts");
    comparable(
        alerts
            .iter()
            .map(tally_wire::alerts::alert_to_proto)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_alerts_are_moved_aside_and_rebuilt_from_the_stored_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coord = common::TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut client = coord.client().await;
    for st in ["RUS", "KAZ"] {
        let snap = common::snapshot(
            st,
            1,
            SnapshotDigest::GENESIS,
            &common::items(&[
                ("9P39", "A1", Status::InService, None),
                ("9P39", &format!("{st}-L"), Status::Lost, None),
            ]),
        );
        common::submit(&mut client, &snap).await.expect("accepted");
    }
    let before = current_alerts(&coord);
    assert_eq!(
        before.len(),
        3,
        "two lost items and one serial on two books"
    );
    coord.stop().await;

    // One alert record no longer decodes (what a torn write or a disk
    // error would leave). Before the recovery the coordinator refused to
    // start: "stored alert record is corrupt".
    {
        let store = common::open_store(dir.path());
        let alerts = store.db().open_tree("alerts").expect("tree");
        let (key, _) = alerts.first().expect("read").expect("an alert");
        alerts.insert(key, &b"{not json"[..]).expect("insert");
        tally::coordinator::storage::flush(store.db()).expect("flush");
    }
    let coord = common::TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    assert_eq!(current_alerts(&coord), before, "rebuilt from the snapshots");
    coord.stop().await;

    // The unreadable originals are kept, moved aside, for a person to read.
    let store = common::open_store(dir.path());
    let names: Vec<String> = store
        .db()
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let aside = names
        .iter()
        .find(|n| n.starts_with("quarantine.") && n.ends_with(".alerts"))
        .unwrap_or_else(|| panic!("no quarantined alerts tree among {names:?}"));
    let kept = store.db().open_tree(aside).expect("tree");
    assert!(
        kept.iter()
            .values()
            .any(|v| v.expect("read").as_ref() == b"{not json"),
        "the unreadable record is kept as it was"
    );
}
