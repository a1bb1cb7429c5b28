//! Reconciliation benchmark (issue 3): six states × 1,000,000 items, two rounds.
//!
//! Run: `cargo bench --bench reconcile`. Environment:
//! - `TALLY_BENCH_ITEMS` items per state (default 1,000,000),
//! - `TALLY_BENCH_STATES` member states (default 6),
//! - `TALLY_BENCH_CHANGE_PERCENT` share of items that round 2 changes (default 1),
//! - `TALLY_BENCH_ROUND=realistic` round 2 follows `RoundProfile::realistic`
//!   (about 30 % of rows differ, with confirmed transfers) instead,
//! - `TALLY_BENCH_RUNS` coordinator runs on fresh stores (default 1; per-state
//!   numbers are pooled and their median printed),
//! - `TALLY_BENCH_DIR` keep the generated CSVs and the store here (default: a
//!   temporary directory, removed at the end),
//! - `TALLY_BENCH_DUCKDB=0` skips the DuckDB comparison,
//! - `TALLY_BENCH_PERF=FILE` records the coordinator with `perf record -g`
//!   during round 2 of the first run (for `perf report -i FILE`).
//!
//! What it does:
//! 1. Generates a seeded two-round scenario with a known number of planted
//!    discrepancies of every kind (`tally::dev::generate::reconcile_scenario`) and
//!    writes the exports as CSV files.
//! 2. Node side, in this process: parses, sorts, builds and signs all
//!    snapshots (timed, for the end-to-end comparison).
//! 3. Coordinator side, in a **child process** (this binary again, so its
//!    memory is the coordinator's alone): `tally::coordinator::server::assemble` on a sled
//!    store, transfer grace 0, served on 127.0.0.1. This process submits round
//!    1 of every state, then round 2, over loopback gRPC and times each submit
//!    call. The coordinator reconciles before it answers, so the submit time
//!    is ingest + reconciliation; the reconciliation part alone is the
//!    coordinator's own measurement (the `elapsed_ms` of its `reconciled`
//!    log event, read from the child through a tracing layer), and ingest is
//!    the difference.
//! 4. Stops the child, reads its peak RSS, then starts a new child on the same
//!    store and times start-up to serving (store open + state rebuild + bind),
//!    and a third one that only opens the store with plain sled (no orphan
//!    scan), for comparison. Then replays the same snapshots through
//!    `reconcile::Engine` alone in this process (no store, no evidence lines),
//!    to separate the engine's time and memory from the coordinator's.
//! 5. Compares open alerts per kind (engine, persisted alert store, and after
//!    the restart) with the planted counts, then runs
//!    `benches/duckdb_rules.py` on the same CSVs as a second oracle and for
//!    timing. Exits non-zero on any count mismatch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use tally::coordinator::storage::Storage;
use tally::dev::generate::{PLANTED_KINDS, RoundProfile, ScenarioConfig, reconcile_scenario};
use tally::inventory_csv::{ExportOptions, read_export};
use tally::proto::{self, snapshots_client::SnapshotsClient, submit_request};
use tally::reconcile::{AlertKind, Engine, EngineConfig, ItemView, NoLines, SnapshotRef};
use tally::serial::CanonicalRule;
use tally::snapshot::leaf::leaves;
use tally::snapshot::{SignedHeader, SnapshotDigest, build_snapshot, sort_items};
use tally::state::{MEMBER_STATES, StateCode, StateSet};
use tally_wire::convert::signed_header_to_proto;

/// The same allocator as the `tally` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child: the store directory of the coordinator to run.
const CHILD_ENV: &str = "TALLY_BENCH_COORDINATOR_DIR";
/// Set in the child: open this store with plain sled (no orphan scan, no
/// coordinator), report time and RSS, and exit.
const SLED_OPEN_ENV: &str = "TALLY_BENCH_SLED_OPEN_DIR";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// A field of /proc/PID/status (or /proc/self/status), in kB.
fn proc_status_kb(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.0} MB", k as f64 / 1024.0))
}

/// `name=value` in a child's line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

fn field_f64(line: &str, name: &str) -> f64 {
    field(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Deterministic member keys, as in the integration tests.
fn state_key(state: StateCode) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..3].copy_from_slice(state.as_bytes());
    SigningKey::from_bytes(&seed)
}

fn coordinator_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        coordinator_child(Path::new(&dir));
        return;
    }
    if let Ok(dir) = std::env::var(SLED_OPEN_ENV) {
        let t = Instant::now();
        let db = sled::Config::new().path(&dir).open().expect("sled opens");
        for tree in ["snapshots", "chunks", "equivocations"] {
            db.open_tree(tree).expect("tree");
        }
        println!(
            "@sledopen open_ms={:.1} rss_kb={}",
            ms(t.elapsed()),
            proc_status_kb(None, "VmRSS").unwrap_or(0)
        );
        return;
    }
    let ok = run();
    if !ok {
        eprintln!("reconcile benchmark: alert counts do not match (see above)");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// The coordinator child.
// ---------------------------------------------------------------------------

/// Forwards the coordinator's timing events (`elapsed_ms` fields) to stdout.
struct Probe;

#[derive(Default)]
struct Fields {
    message: String,
    elapsed_ms: Option<u64>,
    changes: Option<u64>,
    bytes: Option<u64>,
    from_checkpoint: Option<bool>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "elapsed_ms" => self.elapsed_ms = Some(value),
            "alert_changes" | "recorded_changes" => self.changes = Some(value),
            "bytes" => self.bytes = Some(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "from_checkpoint" {
            self.from_checkpoint = Some(value);
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Probe {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(elapsed) = f.elapsed_ms {
            let tag = if f.message == "reconciled" {
                "reconciled"
            } else if f.message.starts_with("reconciliation state rebuilt") {
                "rebuilt"
            } else if f.message.starts_with("engine checkpoint written") {
                "checkpoint"
            } else {
                "timed"
            };
            println!(
                "@{tag} elapsed_ms={elapsed} changes={} bytes={} from_checkpoint={}",
                f.changes.unwrap_or(0),
                f.bytes.unwrap_or(0),
                f.from_checkpoint.unwrap_or(false),
            );
        } else if *event.metadata().level() <= tracing::Level::WARN {
            eprintln!("coordinator: {} {}", event.metadata().level(), f.message);
        }
    }
}

fn kind_counts(kinds: impl Iterator<Item = AlertKind>) -> BTreeMap<AlertKind, usize> {
    let mut out = BTreeMap::new();
    for k in kinds {
        *out.entry(k).or_default() += 1;
    }
    out
}

/// Runs a coordinator on `dir` until its standard input closes; reports on
/// standard output.
fn coordinator_child(dir: &Path) {
    use tracing_subscriber::prelude::*;
    // INFO and above only: h2 and hyper emit many TRACE events per frame.
    tracing_subscriber::registry()
        .with(Probe.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let store = Storage::open_sled(dir).expect("store opens");
    let open_ms = ms(started.elapsed());
    let open_rss_kb = proc_status_kb(None, "VmRSS").unwrap_or(0);
    let members: Vec<_> = MEMBER_STATES
        .iter()
        .map(|s| StateCode::parse(s).expect("member"))
        .map(|s| (s, state_key(s).verifying_key()))
        .collect();
    let coordinator = tally::coordinator::server::assemble(
        store,
        members,
        coordinator_key(),
        Default::default(),
        CanonicalRule::default(),
        EngineConfig {
            transfer_grace_ms: 0,
            ..Default::default()
        },
        Duration::from_secs(3600),
    )
    .expect("coordinator assembles");
    let assembled_ms = ms(started.elapsed());
    let reconciler = coordinator.reconciler.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = stop_tx.send(());
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        println!(
            "@ready addr={addr} open_ms={open_ms:.1} assemble_ms={:.1} serving_ms={:.1} open_rss_kb={open_rss_kb} rss_kb={} hwm_kb={}",
            assembled_ms - open_ms,
            ms(started.elapsed()),
            proc_status_kb(None, "VmRSS").unwrap_or(0),
            proc_status_kb(None, "VmHWM").unwrap_or(0),
        );
        tally::coordinator::server::serve(coordinator, listener, async {
            let _ = stop_rx.await;
        })
        .await
        .expect("serve");
    });
    println!(
        "@memory rss_kb={} hwm_kb={}",
        proc_status_kb(None, "VmRSS").unwrap_or(0),
        proc_status_kb(None, "VmHWM").unwrap_or(0),
    );
    let engine = reconciler
        .with_engine(|e| kind_counts(e.open_alerts().keys().map(|k| k.kind)))
        .expect("engine");
    let stored = kind_counts(
        reconciler
            .alerts()
            .current_alerts()
            .expect("alerts")
            .iter()
            .map(|a| a.key.kind),
    );
    for (source, counts) in [("engine", engine), ("store", stored)] {
        for (kind, n) in counts {
            println!("@count source={source} kind={kind} n={n}");
        }
    }
    println!("@end");
}

// ---------------------------------------------------------------------------
// The driver.
// ---------------------------------------------------------------------------

/// A coordinator child process and its report lines.
struct ChildCoordinator {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

/// What a child said when it stopped.
struct ChildReport {
    /// The `@checkpoint` line of the clean stop, if one was written.
    checkpoint: Option<String>,
    hwm_kb: Option<u64>,
    engine: BTreeMap<String, usize>,
    store: BTreeMap<String, usize>,
}

impl ChildCoordinator {
    fn spawn(dir: &Path) -> ChildCoordinator {
        let mut child = Command::new(std::env::current_exe().expect("own executable"))
            .env(CHILD_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn coordinator child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildCoordinator {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix` (others are ignored).
    fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("coordinator child: no {prefix} line ({e})"),
            }
        }
    }

    /// The next line starting with `prefix`, and the `@rebuilt` line seen
    /// before it (start-up).
    fn expect_after_rebuild(&self, prefix: &str, timeout: Duration) -> (String, String) {
        let mut rebuilt = String::new();
        loop {
            let line = self.expect("@", timeout);
            if line.starts_with("@rebuilt") {
                rebuilt = line;
            } else if line.starts_with(prefix) {
                return (line, rebuilt);
            }
        }
    }

    /// Closes its standard input (it shuts down) and collects its report.
    fn stop(mut self) -> ChildReport {
        drop(self.stdin.take());
        let mut checkpoint = None;
        let memory = loop {
            let line = self.expect("@", Duration::from_secs(120));
            if line.starts_with("@checkpoint") {
                checkpoint = Some(line);
            } else if line.starts_with("@memory") {
                break line;
            }
        };
        let mut report = ChildReport {
            checkpoint,
            hwm_kb: field(&memory, "hwm_kb").and_then(|v| v.parse().ok()),
            engine: BTreeMap::new(),
            store: BTreeMap::new(),
        };
        loop {
            let line = self.expect("@", Duration::from_secs(120));
            if line.starts_with("@end") {
                break;
            }
            if line.starts_with("@count") {
                let kind = field(&line, "kind").unwrap_or("?").to_string();
                let n = field(&line, "n").and_then(|v| v.parse().ok()).unwrap_or(0);
                match field(&line, "source") {
                    Some("engine") => report.engine.insert(kind, n),
                    _ => report.store.insert(kind, n),
                };
            }
        }
        let status = self.child.wait().expect("child exits");
        assert!(status.success(), "coordinator child failed: {status}");
        report
    }
}

/// One signed snapshot, ready to send.
struct Prepared {
    state: StateCode,
    round: usize,
    items: u64,
    signed: SignedHeader,
    chunks: Vec<Bytes>,
}

/// Node-side timings, summed over all snapshots.
#[derive(Default)]
struct NodeTimes {
    parse: Duration,
    sort: Duration,
    build: Duration,
    sign: Duration,
}

impl NodeTimes {
    fn total(&self) -> Duration {
        self.parse + self.sort + self.build + self.sign
    }
}

fn prepare(paths: &[(StateCode, usize, PathBuf)], times: &mut NodeTimes) -> Vec<Prepared> {
    let rule = CanonicalRule::default();
    let known = StateSet::members();
    let opts = ExportOptions::new(&rule, &known);
    // As-of times in the past, so grace 0 has passed when round 2 is reconciled.
    let hour = 3_600_000;
    let start = tally::support::clock::system_now_unix_ms() - 3 * hour;
    let mut previous: BTreeMap<StateCode, SnapshotDigest> = BTreeMap::new();
    let mut out = Vec::new();
    for (state, round, path) in paths {
        let t = Instant::now();
        let file = std::fs::File::open(path).expect("export file");
        let mut items = read_export(
            &path.display().to_string(),
            std::io::BufReader::with_capacity(1 << 20, file),
            &opts,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        times.parse += t.elapsed();
        let t = Instant::now();
        sort_items(&mut items);
        times.sort += t.elapsed();
        let t = Instant::now();
        let prev = previous
            .get(state)
            .copied()
            .unwrap_or(SnapshotDigest::GENESIS);
        let unsigned = build_snapshot(
            *state,
            *round as u64,
            start + *round as i64 * hour,
            prev,
            &items,
        );
        times.build += t.elapsed();
        let t = Instant::now();
        let signed = unsigned.header.sign(&state_key(*state));
        times.sign += t.elapsed();
        previous.insert(*state, signed.digest());
        out.push(Prepared {
            state: *state,
            round: *round,
            items: signed.header.item_count,
            signed,
            chunks: unsigned.chunks.into_iter().map(Bytes::from).collect(),
        });
    }
    out
}

async fn submit(addr: &str, p: &Prepared) -> Duration {
    let mut client = SnapshotsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut msgs = vec![proto::SubmitRequest {
        part: Some(submit_request::Part::Header(signed_header_to_proto(
            &p.signed,
        ))),
    }];
    msgs.extend(p.chunks.iter().map(|c| proto::SubmitRequest {
        part: Some(submit_request::Part::Chunk(proto::ItemChunk {
            leaves: c.clone(),
        })),
    }));
    let t = Instant::now();
    client
        .submit(tokio_stream::iter(msgs))
        .await
        .unwrap_or_else(|e| panic!("{} round {} rejected: {e}", p.state, p.round));
    t.elapsed()
}

/// One submission as measured.
struct Sample {
    state: StateCode,
    round: usize,
    items: u64,
    submit_ms: f64,
    reconcile_ms: f64,
    changes: u64,
}

/// One coordinator run on a fresh store: both rounds, then a restart.
struct RunResult {
    /// The `@sledopen` line: plain sled open of the same store.
    sled_open: String,
    samples: Vec<Sample>,
    rss_after_round: [Option<u64>; 2],
    hwm_kb: Option<u64>,
    final_report: ChildReport,
    restart_wall_ms: f64,
    restart_line: String,
    /// The restart's `@rebuilt` line (from the checkpoint or not).
    restart_rebuilt: String,
    restart_rss_kb: Option<u64>,
    restart_report: ChildReport,
    /// A second restart with the checkpoint removed (as after a crash):
    /// wall time, `@ready` line, `@rebuilt` line, report.
    rebuild_wall_ms: f64,
    rebuild_line: String,
    rebuild_rebuilt: String,
    rebuild_report: ChildReport,
    disk_bytes: u64,
}

fn coordinator_run(store_dir: &Path, snapshots: &[Prepared]) -> RunResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let child = ChildCoordinator::spawn(store_dir);
    let ready = child.expect("@ready", Duration::from_secs(60));
    let addr = field(&ready, "addr").expect("addr").to_string();
    let mut samples = Vec::new();
    let mut rss_after_round = [None, None];
    let mut perf: Option<Child> = None;
    for p in snapshots {
        if p.round == 2
            && perf.is_none()
            && let Ok(file) = std::env::var("TALLY_BENCH_PERF")
        {
            perf = Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "499",
                    "--call-graph",
                    "dwarf,32768",
                    "-o",
                    &file,
                    "-p",
                ])
                .arg(child.pid().to_string())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| eprintln!("perf record: {e}"))
                .ok();
            std::thread::sleep(Duration::from_millis(500));
        }
        let submit_time = runtime.block_on(submit(&addr, p));
        let line = child.expect("@reconciled", Duration::from_secs(120));
        let sample = Sample {
            state: p.state,
            round: p.round,
            items: p.items,
            submit_ms: ms(submit_time),
            reconcile_ms: field_f64(&line, "elapsed_ms"),
            changes: field(&line, "changes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        println!(
            "  round {} {}  {:>9} items  submit {:>8.1} ms = ingest {:>8.1} ms + reconcile {:>7.0} ms  ({} alert changes)",
            sample.round,
            sample.state,
            sample.items,
            sample.submit_ms,
            sample.submit_ms - sample.reconcile_ms,
            sample.reconcile_ms,
            sample.changes
        );
        samples.push(sample);
        rss_after_round[p.round - 1] = proc_status_kb(Some(child.pid()), "VmRSS");
    }
    if let Some(mut perf) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let hwm_kb = proc_status_kb(Some(child.pid()), "VmHWM");
    // Close the client's connections first: the server shuts down gracefully.
    drop(runtime);
    let final_report = child.stop();
    let disk_bytes = dir_size(store_dir);

    // Restart on the same store: process start to serving.
    let t = Instant::now();
    let child = ChildCoordinator::spawn(store_dir);
    let (restart_line, restart_rebuilt) =
        child.expect_after_rebuild("@ready", Duration::from_secs(120));
    let restart_wall_ms = ms(t.elapsed());
    let restart_rss_kb = proc_status_kb(Some(child.pid()), "VmRSS");
    let restart_report = child.stop();

    // And without the checkpoint, as after a crash: every snapshot replayed.
    let _ = std::fs::remove_file(store_dir.join(tally::coordinator::reconciler::CHECKPOINT_FILE));
    let t = Instant::now();
    let child = ChildCoordinator::spawn(store_dir);
    let (rebuild_line, rebuild_rebuilt) =
        child.expect_after_rebuild("@ready", Duration::from_secs(300));
    let rebuild_wall_ms = ms(t.elapsed());
    let rebuild_report = child.stop();
    let sled_open = Command::new(std::env::current_exe().expect("own executable"))
        .env(SLED_OPEN_ENV, store_dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    RunResult {
        sled_open,
        samples,
        rss_after_round,
        hwm_kb: hwm_kb.or(final_report.hwm_kb),
        final_report,
        restart_wall_ms,
        restart_line,
        restart_rebuilt,
        restart_rss_kb,
        restart_report,
        rebuild_wall_ms,
        rebuild_line,
        rebuild_rebuilt,
        rebuild_report,
        disk_bytes,
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The engine alone, in this process: the snapshots' leaves (already in
/// memory) parsed into views and applied with no evidence lines, no store and
/// no alert persistence. Separates the engine's own time and memory from the
/// coordinator's.
struct EngineAlone {
    /// Per snapshot: (round, parse ms, apply ms).
    times: Vec<(usize, f64, f64)>,
    keys: usize,
    rss_growth_kb: Option<u64>,
    counts: BTreeMap<String, usize>,
}

fn engine_alone(snapshots: &[Prepared]) -> EngineAlone {
    let before = proc_status_kb(None, "VmRSS");
    let mut engine = Engine::new(EngineConfig {
        transfer_grace_ms: 0,
        ..Default::default()
    });
    let mut times = Vec::new();
    for p in snapshots {
        let t = Instant::now();
        let mut views: Vec<ItemView<'_>> = Vec::with_capacity(p.items as usize);
        for chunk in &p.chunks {
            for leaf in leaves(chunk) {
                let (leaf, _) = leaf.expect("leaf parses");
                views.push(ItemView::from(leaf));
            }
        }
        let parsed = t.elapsed();
        let h = &p.signed.header;
        let reference = SnapshotRef {
            state: h.state,
            sequence: h.sequence,
            digest: p.signed.digest(),
            as_of_unix_ms: h.as_of_unix_ms,
        };
        let t = Instant::now();
        engine.apply_snapshot(
            reference,
            views,
            &NoLines,
            tally::support::clock::system_now_unix_ms(),
        );
        times.push((p.round, ms(parsed), ms(t.elapsed())));
    }
    let after = proc_status_kb(None, "VmRSS");
    EngineAlone {
        times,
        keys: engine.key_count(),
        rss_growth_kb: after.zip(before).map(|(a, b)| a.saturating_sub(b)),
        counts: kind_counts(engine.open_alerts().keys().map(|k| k.kind))
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
    }
}

/// Compares counts by kind name; prints a table row per kind.
fn check(label: &str, expected: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) -> bool {
    let same = expected
        .keys()
        .chain(got.keys())
        .all(|k| expected.get(k).copied().unwrap_or(0) == got.get(k).copied().unwrap_or(0));
    if !same {
        println!("  MISMATCH in {label}: expected {expected:?}, got {got:?}");
    }
    same
}

/// DuckDB's output, parsed.
struct DuckDb {
    counts: BTreeMap<String, usize>,
    load_s: f64,
    canon_s: f64,
    rules_s: f64,
    update_s: f64,
    peak_rss_mb: f64,
}

/// `Ok(None)`: skipped (no python3 or no duckdb), with the reason printed.
fn run_duckdb(csv_dir: &Path) -> Result<Option<DuckDb>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_rules.py");
    let out = match Command::new("python3").arg(script).arg(csv_dir).output() {
        Ok(out) => out,
        Err(e) => {
            println!("  python3 not available ({e}): skipped");
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if text.contains("skipped") {
        println!("  {}", text.trim());
        return Ok(None);
    }
    for line in text.lines() {
        println!("  | {line}");
    }
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let counts = text
        .lines()
        .filter_map(|l| l.strip_prefix("kind "))
        .filter_map(|r| {
            let mut it = r.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect();
    Ok(Some(DuckDb {
        counts,
        load_s: value("load_seconds "),
        canon_s: value("canon_seconds "),
        rules_s: value("rules_seconds "),
        update_s: value("update_seconds "),
        peak_rss_mb: value("peak_rss_mb "),
    }))
}

fn run() -> bool {
    let items = env_usize("TALLY_BENCH_ITEMS", 1_000_000);
    let states = env_usize("TALLY_BENCH_STATES", 6);
    let runs = env_usize("TALLY_BENCH_RUNS", 1).max(1);
    let change_percent: f64 = std::env::var("TALLY_BENCH_CHANGE_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let kept = std::env::var("TALLY_BENCH_DIR").ok().map(PathBuf::from);
    let temp = tempfile::tempdir().expect("tempdir");
    let root = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let csv_dir = root.join("csv");

    let mut config = ScenarioConfig::new(states, items, 7);
    config.change_percent = change_percent;
    // TALLY_BENCH_ROUND=realistic: round 2 follows the realistic round
    // profile (about 30 % of rows differ) instead of the change percent.
    if std::env::var("TALLY_BENCH_ROUND").as_deref() == Ok("realistic") {
        config.round_profile = Some(RoundProfile::realistic());
    }
    let round2 = match &config.round_profile {
        Some(_) => "the realistic round profile".to_string(),
        None => format!("{change_percent}%"),
    };
    println!(
        "tally reconcile benchmark: {} states × {items} items, round 2 changes {round2}, \
         {} planted cases per kind and state, {runs} run(s); data in {}",
        config.states.len(),
        config.planted_per_kind,
        root.display()
    );

    // 1. Scenario.
    let t = Instant::now();
    let scenario = reconcile_scenario(&config);
    let written = scenario.write_to(&csv_dir).expect("write CSVs");
    let csv_bytes: u64 = written
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "generate  {} CSV files, {} MB, in {:.1} s",
        written.len(),
        csv_bytes / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let expected: BTreeMap<String, usize> = scenario
        .expected()
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    let mut paths = Vec::new();
    for round in [1, 2] {
        for state in scenario.states() {
            paths.push((
                *state,
                round,
                csv_dir.join(format!("round{round}/{state}.csv")),
            ));
        }
    }
    drop(scenario);

    // 2. Node side.
    let mut node = NodeTimes::default();
    let snapshots = prepare(&paths, &mut node);
    let total_items: u64 = snapshots.iter().map(|p| p.items).sum();
    println!(
        "node      parse {:.1} s, sort {:.1} s, leaves+root {:.1} s, sign {:.3} s: {:.1} s for {} snapshots, {total_items} items",
        node.parse.as_secs_f64(),
        node.sort.as_secs_f64(),
        node.build.as_secs_f64(),
        node.sign.as_secs_f64(),
        node.total().as_secs_f64(),
        snapshots.len()
    );

    // 3–4. Coordinator runs.
    let mut results = Vec::new();
    for run in 0..runs {
        let store_dir = root.join(format!("store-{run}"));
        let _ = std::fs::remove_dir_all(&store_dir);
        println!(
            "coordinator run {} (child process, store {})",
            run + 1,
            store_dir.display()
        );
        results.push(coordinator_run(&store_dir, &snapshots));
        if kept.is_none() || run + 1 < runs {
            let _ = std::fs::remove_dir_all(&store_dir);
        }
    }

    // The engine alone, for the breakdown.
    let alone = engine_alone(&snapshots);

    // 5. Report.
    let pooled = |round: usize, f: fn(&Sample) -> f64| -> Vec<f64> {
        results
            .iter()
            .flat_map(|r| r.samples.iter())
            .filter(|s| s.round == round)
            .map(f)
            .collect()
    };
    let per_run = |f: &dyn Fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    let round_total = |round: usize, f: fn(&Sample) -> f64| {
        per_run(&|r: &RunResult| r.samples.iter().filter(|s| s.round == round).map(f).sum())
    };
    let submit_of = |s: &Sample| s.submit_ms;
    let reconcile_of = |s: &Sample| s.reconcile_ms;
    let ingest_of = |s: &Sample| s.submit_ms - s.reconcile_ms;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "\nsummary (median over states and runs; max in brackets)"
    );
    for round in [1, 2] {
        let _ = writeln!(
            report,
            "round {round}: per snapshot submit {:.0} ms [{:.0}] = ingest {:.0} ms [{:.0}] + reconcile {:.0} ms [{:.0}]; \
             all states: submit {:.1} s, reconcile {:.1} s",
            median(pooled(round, submit_of)),
            max(&pooled(round, submit_of)),
            median(pooled(round, ingest_of)),
            max(&pooled(round, ingest_of)),
            median(pooled(round, reconcile_of)),
            max(&pooled(round, reconcile_of)),
            round_total(round, submit_of) / 1000.0,
            round_total(round, reconcile_of) / 1000.0,
        );
    }
    let r2_max = max(&pooled(2, reconcile_of));
    let _ = writeln!(
        report,
        "target round 2 (alerts updated ≤ 1 s after upload): worst {:.0} ms — {}",
        r2_max,
        if r2_max <= 1000.0 { "met" } else { "MISSED" }
    );
    let hwm = per_run(&|r: &RunResult| r.hwm_kb.unwrap_or(0) as f64);
    let _ = writeln!(
        report,
        "coordinator memory: RSS after round 1 {}, after round 2 {}, peak (VmHWM) {} — target ≤ 1 GiB {}; \
         restarted coordinator RSS {}; store on disk {} MB; bench process (node side, all snapshots held) peak {}",
        mb(results[0].rss_after_round[0]),
        mb(results[0].rss_after_round[1]),
        mb(Some(hwm as u64)),
        if hwm <= 1024.0 * 1024.0 {
            "met"
        } else {
            "MISSED"
        },
        mb(results[0].restart_rss_kb),
        results[0].disk_bytes / 1_000_000,
        mb(proc_status_kb(None, "VmHWM")),
    );
    let alone_round = |round: usize, f: fn(&(usize, f64, f64)) -> f64| {
        median(alone.times.iter().filter(|t| t.0 == round).map(f).collect())
    };
    for round in [1, 2] {
        let _ = writeln!(
            report,
            "engine alone, round {round} (in this process, no store, no evidence): parse leaves {:.0} ms + apply {:.0} ms per snapshot",
            alone_round(round, |t| t.1),
            alone_round(round, |t| t.2),
        );
    }
    let _ = writeln!(
        report,
        "engine alone: {} distinct keys; RSS growth of this process while it held the engine {}",
        alone.keys,
        mb(alone.rss_growth_kb),
    );
    let _ = writeln!(
        report,
        "restarted coordinator RSS after Storage::open_sled {} (before the engine is rebuilt); \
         plain sled open of the same store, without the orphan-chunk scan: {:.0} ms, RSS {}",
        mb(field(&results[0].restart_line, "open_rss_kb").and_then(|v| v.parse().ok())),
        field_f64(&results[0].sled_open, "open_ms"),
        mb(field(&results[0].sled_open, "rss_kb").and_then(|v| v.parse().ok())),
    );
    let _ = writeln!(
        report,
        "engine checkpoint at the clean stop after round 2: {:.0} ms, {}",
        per_run(&|r: &RunResult| {
            r.final_report
                .checkpoint
                .as_deref()
                .map_or(f64::NAN, |l| field_f64(l, "elapsed_ms"))
        }),
        mb(results[0]
            .final_report
            .checkpoint
            .as_deref()
            .and_then(|l| field(l, "bytes"))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|b| b / 1024)),
    );
    let restart_wall = per_run(&|r: &RunResult| r.restart_wall_ms);
    let restart_serving = per_run(&|r: &RunResult| field_f64(&r.restart_line, "serving_ms"));
    let _ = writeln!(
        report,
        "restart to serving after a clean stop (from_checkpoint={}): {:.0} ms in the coordinator \
         (store open {:.0} ms + assemble/rebuild {:.0} ms + bind), {:.0} ms from process spawn — target ≤ 3 s {}",
        field(&results[0].restart_rebuilt, "from_checkpoint").unwrap_or("?"),
        restart_serving,
        per_run(&|r: &RunResult| field_f64(&r.restart_line, "open_ms")),
        per_run(&|r: &RunResult| field_f64(&r.restart_line, "assemble_ms")),
        restart_wall,
        if restart_wall <= 3000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    let _ = writeln!(
        report,
        "restart without the checkpoint (as after a crash; from_checkpoint={}): {:.0} ms in the \
         coordinator (assemble/rebuild {:.0} ms), {:.0} ms from process spawn",
        field(&results[0].rebuild_rebuilt, "from_checkpoint").unwrap_or("?"),
        per_run(&|r: &RunResult| field_f64(&r.rebuild_line, "serving_ms")),
        per_run(&|r: &RunResult| field_f64(&r.rebuild_line, "assemble_ms")),
        per_run(&|r: &RunResult| r.rebuild_wall_ms),
    );
    print!("{report}");

    // Counts.
    let mut ok = true;
    println!("\nopen alerts per kind (expected = planted)");
    println!(
        "  {:<28} {:>9} {:>9} {:>9} {:>9}",
        "kind", "expected", "engine", "stored", "restart"
    );
    let mut all_kinds: Vec<String> = PLANTED_KINDS.iter().map(|k| k.to_string()).collect();
    for r in &results {
        for k in r
            .final_report
            .engine
            .keys()
            .chain(r.final_report.store.keys())
        {
            if !all_kinds.contains(k) {
                all_kinds.push(k.clone());
            }
        }
    }
    let r0 = &results[0];
    for k in &all_kinds {
        let g = |m: &BTreeMap<String, usize>| m.get(k).copied().unwrap_or(0);
        println!(
            "  {:<28} {:>9} {:>9} {:>9} {:>9}",
            k,
            g(&expected),
            g(&r0.final_report.engine),
            g(&r0.final_report.store),
            g(&r0.restart_report.engine)
        );
    }
    for (i, r) in results.iter().enumerate() {
        ok &= check(
            &format!("run {} engine", i + 1),
            &expected,
            &r.final_report.engine,
        );
        ok &= check(
            &format!("run {} alert store", i + 1),
            &expected,
            &r.final_report.store,
        );
        ok &= check(
            &format!("run {} after restart", i + 1),
            &expected,
            &r.restart_report.engine,
        );
        ok &= check(
            &format!("run {} alert store after restart", i + 1),
            &expected,
            &r.restart_report.store,
        );
        ok &= check(
            &format!("run {} after a restart without the checkpoint", i + 1),
            &expected,
            &r.rebuild_report.engine,
        );
        ok &= check(
            &format!(
                "run {} alert store after a restart without the checkpoint",
                i + 1
            ),
            &expected,
            &r.rebuild_report.store,
        );
        if field(&r.restart_rebuilt, "from_checkpoint") != Some("true") {
            println!(
                "  run {}: the restart after a clean stop did not use the checkpoint",
                i + 1
            );
            ok = false;
        }
    }
    ok &= check("engine alone", &expected, &alone.counts);
    println!(
        "  Tally vs planted: {}",
        if ok { "all equal" } else { "MISMATCH" }
    );

    // DuckDB.
    if std::env::var("TALLY_BENCH_DUCKDB").as_deref() == Ok("0") {
        println!("\nDuckDB comparison: skipped (TALLY_BENCH_DUCKDB=0)");
    } else {
        println!("\nDuckDB on the same CSVs (benches/duckdb_rules.py)");
        match run_duckdb(&csv_dir) {
            Ok(None) => {}
            Err(why) => {
                println!("  DuckDB comparison {why}");
                ok = false;
            }
            Ok(Some(d)) => {
                let agree = check("DuckDB", &expected, &d.counts);
                ok &= agree;
                println!(
                    "  DuckDB vs planted (and so vs Tally): {}",
                    if agree { "all equal" } else { "MISMATCH" }
                );
                let duck_total = d.load_s + d.canon_s + d.rules_s;
                let coord_total = (round_total(1, submit_of) + round_total(2, submit_of)) / 1000.0;
                let tally_total = node.total().as_secs_f64() + coord_total;
                let node_per_snapshot = node.total().as_secs_f64() / snapshots.len() as f64;
                let tally_update = node_per_snapshot + median(pooled(2, submit_of)) / 1000.0;
                println!(
                    "  both rounds from CSV: DuckDB load {:.1} s + canonicalise {:.1} s + rules {:.1} s = {:.1} s (peak RSS {:.0} MB)",
                    d.load_s, d.canon_s, d.rules_s, duck_total, d.peak_rss_mb
                );
                println!(
                    "                        Tally node {:.1} s + coordinator (verify, store, reconcile) {:.1} s = {:.1} s  → Tally/DuckDB {:.2}×; coordinator alone {:.2}×",
                    node.total().as_secs_f64(),
                    coord_total,
                    tally_total,
                    tally_total / duck_total,
                    coord_total / duck_total
                );
                println!(
                    "  one state's new round-2 snapshot: DuckDB replace + rerun {:.2} s; Tally node {:.2} s + submit {:.2} s = {:.2} s \
                     (alerts updated {:.2} s after upload)  → Tally/DuckDB {:.2}×",
                    d.update_s,
                    node_per_snapshot,
                    median(pooled(2, submit_of)) / 1000.0,
                    tally_update,
                    median(pooled(2, reconcile_of)) / 1000.0,
                    tally_update / d.update_s
                );
            }
        }
    }
    drop(temp);
    ok
}
