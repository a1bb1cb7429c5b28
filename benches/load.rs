//! Load (issue 7): six member nodes submit 1,000,000-item snapshots at the
//! same time while watchers stream alert events and an operator traces items.
//!
//! Everything is the real deployment on one machine: one `tally coordinator`
//! process and, per round, six `tally node submit` processes (the binaries of
//! this package), TLS with a node certificate per state, and an operator
//! token for the watchers and the tracer, which run in this process. The data
//! is `tally::dev::generate::reconcile_scenario` (the reconciliation benchmark's
//! planted discrepancies): round 1 loads six full inventories, round 2 sends
//! six new snapshots that differ by about 1 %.
//!
//! Checked, and the run fails (exit status 1) if any check fails:
//! - every node process exits successfully with a receipt for its snapshot;
//! - every watcher received every alert event exactly once, cursors 1, 2, …
//!   up to the coordinator's last cursor, without a gap or a repeat;
//! - the alerts the events describe (the last status per alert id) are the
//!   open alerts the coordinator reports, and those are the planted counts;
//! - every traced item answers OK, and after the load every sampled item has
//!   at least one trace entry;
//! - the coordinator stops cleanly on SIGTERM.
//!
//! Reported: wall time and throughput per round, each node's time, peak RSS
//! of the coordinator (its own high-water mark, read before it stops) and of
//! the node processes (sampled every 50 ms), event delivery lag and trace
//! latencies.
//!
//! `cargo bench --bench load`; environment: `TALLY_LOAD_ITEMS` (per state,
//! default 1,000,000), `TALLY_LOAD_WATCHERS` (default 4), `TALLY_LOAD_SEED`
//! (default 7), `TALLY_LOAD_DIR` (keep keys, exports, logs and the store there
//! instead of a temporary directory that is removed), `TALLY_LOAD_ROUND=realistic`
//! (round 2 follows `RoundProfile::realistic`: about 30 % of rows differ,
//! with confirmed transfers between states, instead of 1 % quiet changes).
//!
//! Every state's snapshot of a round has the same as-of time, and after each
//! round the alert events it wrote are reported beside the alerts left
//! current: the difference is alerts that opened and cleared again within
//! the round.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tally::access::TokenDigest;
use tally::dev::demo::thousands;
use tally::dev::generate::{RoundProfile, ScenarioConfig, reconcile_scenario};
use tally::operator::{Connection, Target, connect};
use tally::proto::trace_client::TraceClient;
use tally::proto::{self, alerts_client::AlertsClient, coordinator_client::CoordinatorClient};
use tally::state::{MEMBER_STATES, StateCode};

const HOUR_MS: i64 = 3_600_000;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn now_unix_ms() -> i64 {
    tally::support::clock::system_now_unix_ms()
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`), if the process lives.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// Percentile of an ascending list (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------
// The deployment: keys, certificates, configurations and exports.
// ---------------------------------------------------------------------------

struct Deployment {
    dir: PathBuf,
    states: Vec<StateCode>,
    operator: Target,
    /// Round 1 and round 2 exports, states in order.
    exports: [Vec<PathBuf>; 2],
    expected: BTreeMap<String, u64>,
    items: u64,
}

impl Deployment {
    fn write(dir: &Path, items_per_state: usize, seed: u64) -> Result<Deployment> {
        let states: Vec<StateCode> = MEMBER_STATES
            .iter()
            .map(|s| StateCode::parse(s))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("member states: {e}"))?;
        let keys = dir.join("keys");
        for state in &states {
            tally::support::keys::write_key_pair(
                &keys,
                state.as_str(),
                &tally::support::keys::generate()?,
            )?;
        }
        tally::support::keys::write_key_pair(
            &keys,
            "coordinator",
            &tally::support::keys::generate()?,
        )?;
        let pki = tally::support::certs::init(&dir.join("certs"), &states, &[])?;
        let token = tally::support::keys::new_token()?;

        let mut coordinator = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"store\"\nkey_file = \"keys/coordinator.key\"\n\n\
             [tls]\ncert_file = \"certs/coordinator.crt\"\nkey_file = \"certs/coordinator.key\"\n\
             client_ca_file = \"certs/ca.crt\"\n\n\
             [reconcile]\n# The planted transfers alert at once (as in the reconciliation benchmark).\n\
             transfer_grace_hours = 0\n\n\
             [[operators]]\nname = \"load\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n",
            TokenDigest::of(&token).to_hex()
        );
        for state in &states {
            let _ = write!(
                coordinator,
                "\n[[members]]\nstate = \"{state}\"\npublic_key_file = \"keys/{state}.pub\"\n"
            );
        }
        std::fs::write(dir.join("coordinator.toml"), coordinator)?;

        let mut config = ScenarioConfig::new(states.len(), items_per_state, seed);
        if std::env::var("TALLY_LOAD_ROUND").as_deref() == Ok("realistic") {
            config.round_profile = Some(RoundProfile::realistic());
        }
        let scenario = reconcile_scenario(&config);
        let paths = scenario.write_to(&dir.join("exports"))?;
        let (round1, round2) = paths.split_at(states.len());
        let expected = scenario
            .expected()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| (kind.to_string(), *n as u64))
            .collect();
        let mut items = 0;
        for path in &paths {
            items += BufReader::new(std::fs::File::open(path)?).lines().count() as u64 - 1;
        }
        Ok(Deployment {
            dir: dir.to_path_buf(),
            states,
            operator: Target {
                coordinator: String::new(),
                ca: Some(pki.ca_cert),
                token: Some(token),
            },
            exports: [round1.to_vec(), round2.to_vec()],
            expected,
            items,
        })
    }

    /// `nodes/ST.toml`, sending to `address` over TLS with the state's certificate.
    fn write_node_config(&self, state: StateCode, address: &str) -> Result<PathBuf> {
        let nodes = self.dir.join("nodes");
        std::fs::create_dir_all(&nodes)?;
        let path = nodes.join(format!("{state}.toml"));
        std::fs::write(
            &path,
            format!(
                "state = \"{state}\"\nkey_file = \"../keys/{state}.key\"\ncoordinator = \"{address}\"\n\
                 coordinator_public_key_file = \"../keys/coordinator.pub\"\noutbox_dir = \"{state}-outbox\"\n\n\
                 [tls]\nca_file = \"../certs/ca.crt\"\ncert_file = \"../certs/{state}.crt\"\n\
                 key_file = \"../certs/{state}.key\"\n"
            ),
        )?;
        Ok(path)
    }

    /// Every `step`-th row of each round-2 export (model, serial): items the
    /// tracer looks up, all of which some snapshot lists by the end.
    fn trace_sample(&self, step: usize) -> Result<Vec<(String, String)>> {
        let mut sample = Vec::new();
        for path in &self.exports[1] {
            let file = BufReader::new(std::fs::File::open(path)?);
            for line in file.lines().skip(1).step_by(step) {
                let line = line?;
                let mut fields = line.split(',');
                if let (Some(model), Some(serial)) = (fields.next(), fields.next()) {
                    sample.push((model.to_string(), serial.to_string()));
                }
            }
        }
        Ok(sample)
    }
}

// ---------------------------------------------------------------------------
// Processes and their memory.
// ---------------------------------------------------------------------------

/// The highest `VmHWM` seen per process, sampled every 50 ms.
#[derive(Clone, Default)]
struct MemorySampler {
    peaks: Arc<Mutex<HashMap<u32, u64>>>,
}

impl MemorySampler {
    fn start(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let peaks = self.peaks.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut peaks) = peaks.lock() {
                    for (pid, peak) in peaks.iter_mut() {
                        if let Some(kb) = proc_status_kb(*pid, "VmHWM") {
                            *peak = (*peak).max(kb);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    fn watch(&self, pid: u32) {
        if let Ok(mut peaks) = self.peaks.lock() {
            peaks.insert(pid, 0);
        }
    }

    fn peak(&self, pid: u32) -> u64 {
        self.peaks
            .lock()
            .ok()
            .and_then(|p| p.get(&pid).copied())
            .unwrap_or(0)
    }
}

struct CoordinatorProcess {
    child: Child,
    address: String,
    log: PathBuf,
}

impl CoordinatorProcess {
    fn start(deployment: &Deployment) -> Result<CoordinatorProcess> {
        let log = deployment.dir.join("coordinator.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("coordinator")
            .arg("--config")
            .arg(deployment.dir.join("coordinator.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start tally coordinator")?;
        let stdout = child.stdout.take().context("coordinator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            let line = line?;
            if let Some(addr) = line.strip_prefix("coordinator listening on ") {
                let port = addr.rsplit(':').next().unwrap_or_default().to_string();
                // Keep reading what else it prints.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(CoordinatorProcess {
                    child,
                    address: format!("https://localhost:{port}"),
                    log,
                });
            }
        }
        bail!(
            "the coordinator stopped before listening; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "the coordinator exited with {status}; log: {}",
                    self.log.display()
                );
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the coordinator did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One `tally node submit` as it ran.
struct NodeRun {
    state: StateCode,
    seconds: f64,
    peak_kb: u64,
}

/// Starts every state's node on its export at once and waits for all.
fn run_round(
    deployment: &Deployment,
    configs: &[PathBuf],
    round: usize,
    as_of: i64,
    sampler: &MemorySampler,
) -> Result<(f64, Vec<NodeRun>)> {
    let started = Instant::now();
    let mut children = Vec::new();
    for ((state, config), export) in deployment
        .states
        .iter()
        .zip(configs)
        .zip(&deployment.exports[round - 1])
    {
        let log = deployment
            .dir
            .join(format!("node-{state}-round{round}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["node", "submit", "--config"])
            .arg(config)
            .arg("--as-of-unix-ms")
            .arg(as_of.to_string())
            .arg(export)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start tally node submit")?;
        sampler.watch(child.id());
        children.push((*state, child, log));
    }
    // One waiting thread per node, so each finish time is its own.
    let waits: Vec<_> = children
        .into_iter()
        .map(|(state, child, log)| {
            std::thread::spawn(move || -> Result<(StateCode, u32, f64)> {
                let pid = child.id();
                let output = child.wait_with_output()?;
                let seconds = started.elapsed().as_secs_f64();
                let stdout = String::from_utf8_lossy(&output.stdout);
                ensure!(
                    output.status.success(),
                    "node {state} round {round} failed ({}): {}",
                    output.status,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                let expected = format!("accepted: state {state} sequence {round} ");
                ensure!(
                    stdout.lines().any(|l| l.starts_with(&expected)),
                    "node {state} round {round}: no receipt for sequence {round} in its output:\n{stdout}"
                );
                Ok((state, pid, seconds))
            })
        })
        .collect();
    let mut runs = Vec::new();
    for wait in waits {
        let (state, pid, seconds) = wait
            .join()
            .map_err(|_| anyhow!("a node waiting thread panicked"))??;
        runs.push(NodeRun {
            state,
            seconds,
            peak_kb: sampler.peak(pid),
        });
    }
    Ok((started.elapsed().as_secs_f64(), runs))
}

// ---------------------------------------------------------------------------
// Watchers and the tracer (in this process, over TLS with the operator token).
// ---------------------------------------------------------------------------

/// What one watcher saw.
#[derive(Default)]
struct Watched {
    events: u64,
    last_cursor: u64,
    /// Events whose cursor was not the previous one plus one.
    out_of_order: u64,
    /// Last status per alert id, and its kind.
    alerts: HashMap<u64, (String, i32)>,
    /// Milliseconds from an event's time to its arrival here.
    lags_ms: Vec<f64>,
}

/// Streams every alert event from the start until the cursor in `until`
/// is reached (set once the load is over).
async fn watch(
    target: Target,
    until: tokio::sync::watch::Receiver<Option<u64>>,
) -> Result<Watched> {
    let mut client = AlertsClient::new(connect(&target).await?);
    let mut stream = client
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await?
        .into_inner();
    let mut seen = Watched::default();
    loop {
        if let Some(end) = *until.borrow()
            && seen.last_cursor >= end
        {
            return Ok(seen);
        }
        let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
        let event = match next {
            Err(_) => continue, // quiet: check whether the load is over
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => bail!("the watch stream ended at cursor {}", seen.last_cursor),
            Ok(Err(status)) => bail!("the watch stream failed: {status}"),
        };
        if event.cursor != seen.last_cursor + 1 {
            seen.out_of_order += 1;
        }
        seen.last_cursor = event.cursor;
        seen.events += 1;
        seen.lags_ms
            .push((now_unix_ms() - event.at_unix_ms).max(0) as f64);
        seen.alerts
            .insert(event.alert_id, (event.kind, event.status));
    }
}

/// What the tracer measured: latencies of traces that found rows, and of
/// traces that found none (early in round 1 most keys are not stored yet).
#[derive(Default)]
struct Traced {
    calls: u64,
    found_ms: Vec<f64>,
    empty_ms: Vec<f64>,
}

/// Traces sampled items one after another until `stop` is set.
async fn trace_loop(
    target: Target,
    sample: Arc<Vec<(String, String)>>,
    stop: Arc<AtomicBool>,
) -> Result<Traced> {
    let mut client = TraceClient::new(connect(&target).await?).max_decoding_message_size(256 << 20);
    let mut traced = Traced::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (model, serial) = &sample[i % sample.len()];
        // Spread over the sample rather than walking it in file order.
        i = i.wrapping_add(7919);
        let started = Instant::now();
        let answer = client
            .trace_item(proto::TraceItemRequest {
                model: model.clone(),
                serial: serial.clone(),
            })
            .await
            .with_context(|| format!("tracing {model} {serial} during the load"))?
            .into_inner();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if answer.entries.is_empty() {
            traced.empty_ms.push(ms);
        } else {
            traced.found_ms.push(ms);
        }
        traced.calls += 1;
    }
    Ok(traced)
}

/// The coordinator's status, then every sampled item traced once more (each
/// must have rows now): the number of rows and each call's latency.
/// The coordinator's status (alert counts and last cursor).
async fn status_of(target: &Target) -> Result<proto::CoordinatorStatus> {
    let connection: Connection = connect(target).await?;
    Ok(CoordinatorClient::new(connection)
        .get_status(proto::GetStatusRequest {})
        .await?
        .into_inner())
}

async fn final_checks(
    target: &Target,
    sample: &[(String, String)],
) -> Result<(proto::CoordinatorStatus, u64, Vec<f64>)> {
    let connection: Connection = connect(target).await?;
    let status = CoordinatorClient::new(connection.clone())
        .get_status(proto::GetStatusRequest {})
        .await?
        .into_inner();
    let mut trace = TraceClient::new(connection).max_decoding_message_size(256 << 20);
    let mut entries = 0;
    let mut latencies_ms = Vec::with_capacity(sample.len());
    for (model, serial) in sample {
        let started = Instant::now();
        let answer = trace
            .trace_item(proto::TraceItemRequest {
                model: model.clone(),
                serial: serial.clone(),
            })
            .await?
            .into_inner();
        latencies_ms.push(started.elapsed().as_secs_f64() * 1e3);
        ensure!(
            !answer.entries.is_empty(),
            "{model} {serial} is in a submitted export but its trace has no entry"
        );
        entries += answer.entries.len() as u64;
    }
    Ok((status, entries, latencies_ms))
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

fn run() -> Result<()> {
    let items = env_number("TALLY_LOAD_ITEMS", 1_000_000) as usize;
    let watchers = env_number("TALLY_LOAD_WATCHERS", 4) as usize;
    let seed = env_number("TALLY_LOAD_SEED", 7);
    let (dir, _temporary) = match std::env::var("TALLY_LOAD_DIR") {
        Ok(d) => {
            let dir = PathBuf::from(d);
            ensure!(
                !dir.exists() || std::fs::read_dir(&dir)?.next().is_none(),
                "TALLY_LOAD_DIR {} is not empty: the run writes fresh keys and a fresh store",
                dir.display()
            );
            std::fs::create_dir_all(&dir)?;
            (dir, None)
        }
        Err(_) => {
            let t = tempfile::tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };

    println!(
        "load: 6 states x {} items, {watchers} watchers, 1 tracer, seed {seed}",
        thousands(items as u64)
    );
    let setup = Instant::now();
    let mut deployment = Deployment::write(&dir, items, seed)?;
    let sample = Arc::new(deployment.trace_sample((items / 200).max(1))?);
    println!(
        "setup: keys, certificates, {} rows of exports in {:.1} s; {} items to trace",
        thousands(deployment.items),
        setup.elapsed().as_secs_f64(),
        sample.len()
    );

    let coordinator = CoordinatorProcess::start(&deployment)?;
    let coordinator_pid = coordinator.child.id();
    deployment.operator.coordinator = coordinator.address.clone();
    let configs: Vec<PathBuf> = deployment
        .states
        .iter()
        .map(|s| deployment.write_node_config(*s, &coordinator.address))
        .collect::<Result<_>>()?;

    let sampler = MemorySampler::default();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler_thread = sampler.start(sampling.clone());
    sampler.watch(coordinator_pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (until_tx, until_rx) = tokio::sync::watch::channel(None);
    let watching: Vec<_> = (0..watchers)
        .map(|_| runtime.spawn(watch(deployment.operator.clone(), until_rx.clone())))
        .collect();
    let tracing_stop = Arc::new(AtomicBool::new(false));
    let tracer = runtime.spawn(trace_loop(
        deployment.operator.clone(),
        sample.clone(),
        tracing_stop.clone(),
    ));

    // As-of times in the past, so that grace 0 has passed for round 2.
    let start = now_unix_ms() - 3 * HOUR_MS;
    let mut rounds = Vec::new();
    let mut cursor_before = 0;
    for round in [1, 2] {
        let (seconds, nodes) = run_round(
            &deployment,
            &configs,
            round,
            start + round as i64 * HOUR_MS,
            &sampler,
        )?;
        let rss = proc_status_kb(coordinator_pid, "VmRSS").unwrap_or(0);
        let round_items: u64 = deployment.exports[round - 1]
            .iter()
            .map(|p| {
                std::fs::File::open(p)
                    .map(|f| BufReader::new(f).lines().count() as u64 - 1)
                    .unwrap_or(0)
            })
            .sum();
        println!(
            "round {round}: 6 snapshots, {} items in {seconds:.1} s ({:.2} M items/s); coordinator RSS after: {}",
            thousands(round_items),
            round_items as f64 / seconds / 1e6,
            mib(rss)
        );
        let after = runtime.block_on(status_of(&deployment.operator))?;
        let current: u64 = after.open_alerts.iter().map(|c| c.open).sum();
        println!(
            "round {round}: {} alert events; {} alerts current after it",
            thousands(after.last_cursor - cursor_before),
            thousands(current)
        );
        cursor_before = after.last_cursor;
        rounds.push((round, round_items, seconds, nodes, rss));
    }

    tracing_stop.store(true, Ordering::Relaxed);
    let traced = runtime.block_on(tracer)??;
    let (status, trace_entries, after_ms) =
        runtime.block_on(final_checks(&deployment.operator, &sample))?;
    until_tx.send_replace(Some(status.last_cursor));
    let mut watched = Vec::new();
    for w in watching {
        watched.push(runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(300), w)
                .await
                .map_err(|_| anyhow!("a watcher did not reach the last cursor within 300 s"))?
                .map_err(|e| anyhow!("watcher task: {e}"))?
        })?);
    }
    let coordinator_hwm = proc_status_kb(coordinator_pid, "VmHWM").unwrap_or(0);
    sampling.store(true, Ordering::Relaxed);
    let _ = sampler_thread.join();
    coordinator.stop()?;

    // Checks.
    let open: BTreeMap<String, u64> = status
        .open_alerts
        .iter()
        .filter(|c| c.open > 0)
        .map(|c| (c.kind.clone(), c.open))
        .collect();
    let mut failures = Vec::new();
    if open != deployment.expected {
        failures.push(format!(
            "open alerts by kind {open:?}, planted {:?}",
            deployment.expected
        ));
    }
    for (i, w) in watched.iter().enumerate() {
        if w.events != status.last_cursor || w.out_of_order > 0 {
            failures.push(format!(
                "watcher {i}: {} events, {} out of order, last cursor {}; the coordinator's last cursor is {}",
                w.events, w.out_of_order, w.last_cursor, status.last_cursor
            ));
        }
        let mut from_events: BTreeMap<String, u64> = BTreeMap::new();
        for (kind, st) in w.alerts.values() {
            if *st == proto::AlertStatus::Open as i32 {
                *from_events.entry(kind.clone()).or_default() += 1;
            }
        }
        if from_events != open {
            failures.push(format!(
                "watcher {i}: the events leave {from_events:?} open, the coordinator reports {open:?}"
            ));
        }
    }

    // Report.
    println!();
    println!("| round | items | wall time | throughput | slowest node | coordinator RSS after |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (round, round_items, seconds, nodes, rss) in &rounds {
        let slowest = nodes.iter().map(|n| n.seconds).fold(0.0, f64::max);
        println!(
            "| {round} | {} | {seconds:.1} s | {:.2} M items/s | {slowest:.1} s | {} |",
            thousands(*round_items),
            *round_items as f64 / seconds / 1e6,
            mib(*rss)
        );
    }
    for (round, _, _, nodes, _) in &rounds {
        let per_node: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} {:.1} s / {}", n.state, n.seconds, mib(n.peak_kb)))
            .collect();
        println!(
            "round {round} nodes (finish time / peak RSS): {}",
            per_node.join(", ")
        );
    }
    let node_peak = rounds
        .iter()
        .flat_map(|r| r.3.iter().map(|n| n.peak_kb))
        .max()
        .unwrap_or(0);
    println!("coordinator peak RSS (VmHWM): {}", mib(coordinator_hwm));
    println!("largest node peak RSS (sampled): {}", mib(node_peak));
    let mut lags: Vec<f64> = watched
        .iter()
        .flat_map(|w| w.lags_ms.iter().copied())
        .collect();
    lags.sort_by(f64::total_cmp);
    println!(
        "alert events: {} per watcher x {watchers} watchers; delivery lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        status.last_cursor,
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    let summary = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        format!(
            "{} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms.len(),
            percentile(&ms, 50.0),
            percentile(&ms, 99.0),
            ms.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!(
        "traces during the load ({} calls): with rows {}; without rows (not stored yet) {}",
        traced.calls,
        summary(traced.found_ms),
        summary(traced.empty_ms)
    );
    println!(
        "traces after the load, every sampled item ({} rows in all): {}",
        trace_entries,
        summary(after_ms)
    );
    println!("open alerts by kind: {open:?}");
    if failures.is_empty() {
        println!("all checks passed");
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there is nothing to select.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
