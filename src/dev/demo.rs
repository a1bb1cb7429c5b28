//! `tally demo`: the whole system on one machine, through its real paths.
//!
//! Keys for the six member states and the coordinator; configuration files
//! loaded the way `tally coordinator` and `tally node` load them; a real
//! coordinator on loopback with a sled store; two rounds of generated
//! inventory exports ([`crate::dev::generate`], with planted discrepancies of every
//! kind and the story's launchers) signed by each state's [`Node`] and
//! submitted over gRPC; a seizure report through the Seizures service; and
//! then what an operator would look at, read back from the coordinator's
//! APIs (never from the demo's own bookkeeping).
//!
//! The kinds that are not in exports are planted the way they happen:
//! - `conflicting_submission`: KGZ's standby node, restored without its
//!   outbox and unable to ask the coordinator for its chain head, signs a
//!   different snapshot as sequence 1; the coordinator rejects it and keeps
//!   it as evidence.
//! - `snapshot_overdue`: TJK is configured to report daily, and its latest
//!   inventory is 30 hours old.
//! - `seized_item`: the story's launchers are reported seized.
//!
//! This is a command, so errors are `anyhow` with context, as in the CLI.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::TcpListener;

use crate::operator::{Connection, Target, connect};

use crate::dev::generate::{ScenarioConfig, StoryCase, reconcile_scenario};
use crate::node::{Node, NodeError, Prepared};
use crate::operator::trace_view::{render_table, utc};
use crate::proto::{
    self, alerts_client::AlertsClient, coordinator_client::CoordinatorClient,
    seizures_client::SeizuresClient, trace_client::TraceClient,
};
use crate::reconcile::AlertKind;
use crate::state::{MEMBER_STATES, StateCode};
use crate::support::clock::system_now_unix_ms as now_unix_ms;
use crate::support::config::{CoordinatorConfig, NodeConfig};
use crate::support::keys;
use crate::support::progress::Progress;

/// Items per state and round at the default size.
pub(crate) const DEFAULT_ITEMS: usize = 100_000;
/// Smallest `--items` the generator can plant every case in.
pub(crate) const MIN_ITEMS: usize = 200;

/// What `tally demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where keys, configuration, exports and stores go; a fresh temporary
    /// directory when `None`. Must be empty or absent.
    pub data_dir: Option<PathBuf>,
    /// Items per state in each export.
    pub items: usize,
    /// Leave the coordinator serving until Ctrl-C or SIGTERM.
    pub keep_running: bool,
    /// Seed of the generated inventories.
    pub seed: u64,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Expected time between snapshots of every state but [`DAILY_STATE`].
const WEEKLY_HOURS: u32 = 168;
/// The state that reports daily and whose latest inventory is late.
const DAILY_STATE: &str = "TJK";
/// The state whose standby node signs a conflicting snapshot.
const STANDBY_STATE: &str = "KGZ";
/// Largest trace response accepted (as `tally trace`).
const MAX_TRACE_RESPONSE: usize = 256 << 20;

/// Runs the demo, printing to stdout. Progress goes to stderr when it is a
/// terminal.
pub async fn run(options: DemoOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    if options.items < MIN_ITEMS {
        bail!(
            "--items {} is too small: at least {MIN_ITEMS} items per state are needed to plant every kind of discrepancy",
            options.items
        );
    }
    let started = Instant::now();
    let dir = prepare_dir(options.data_dir.as_deref())?;
    let now = now_unix_ms();
    let rounds = [now - 6 * DAY_MS, now - DAY_MS];
    let daily_as_of = now - 30 * HOUR_MS;

    println!("Tally demo: six member states and a coordinator, on this machine");
    println!(
        "  directory:    {} (keys, configuration, exports, stores; kept afterwards)",
        dir.display()
    );

    // Keys and configuration, written and then loaded as the real commands do.
    let states: Vec<StateCode> = MEMBER_STATES
        .iter()
        .map(|s| StateCode::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("member state list: {e}"))?;
    let key_dir = dir.join("keys");
    for state in &states {
        keys::write_key_pair(&key_dir, state.as_str(), &keys::generate()?)?;
    }
    keys::write_key_pair(&key_dir, "coordinator", &keys::generate()?)?;
    // TLS as in production: a demo PKI, node certificates per state, and an
    // operator token for the demo's own queries (kept for --keep-running).
    let pki = crate::support::certs::init(&dir.join("certs"), &states, &[])?;
    let token = crate::support::keys::new_token()?;
    let token_file = dir.join("operator.token");
    keys::write_private_file(&token_file, format!("{token}\n").as_bytes())?;
    let coordinator_toml = dir.join("coordinator.toml");
    std::fs::write(
        &coordinator_toml,
        coordinator_config_text(&states, crate::access::TokenDigest::of(&token)),
    )
    .with_context(|| format!("cannot write {}", coordinator_toml.display()))?;
    let config = CoordinatorConfig::load(&coordinator_toml)?;

    // The coordinator, on an ephemeral loopback port.
    let coordinator = crate::coordinator::server::build_coordinator(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = format!("https://localhost:{}", listener.local_addr()?.port());
    let operator = Target {
        coordinator: address.clone(),
        ca: Some(pki.ca_cert.clone()),
        token: Some(token),
    };
    let serve_options = crate::coordinator::server::ServeOptions::from_config(&config)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::coordinator::server::serve_with(
        coordinator,
        listener,
        async {
            let _ = stop_rx.await;
        },
        serve_options,
    ));
    println!(
        "  coordinator:  {address} (TLS; sled store in {})",
        config.data_dir.display()
    );
    println!(
        "  rules:        transfer grace 0 h (demo setting: undelivered transfers alert at once; default 168 h)"
    );
    println!("                expected cadence {WEEKLY_HOURS} h; {DAILY_STATE} 24 h");

    let outcome = match exercise(&options, &dir, &operator, &states, rounds, daily_as_of).await {
        Ok(planted) => report(&operator, &planted).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        let _ = stop_tx.send(());
        let _ = server.await;
        return Err(e);
    }
    println!();
    println!(
        "Done in {:.1} s. Everything is kept in {}.",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    if options.keep_running {
        print_explore(&address, &dir, &pki.ca_cert, &token_file);
        shutdown.await;
        println!("stopping the coordinator");
    } else {
        println!(
            "Run with --keep-running to explore the alerts with `tally alerts` and `tally trace`, or serve this store again with:"
        );
        println!(
            "  tally coordinator --config {}",
            coordinator_toml.display()
        );
    }
    let _ = stop_tx.send(());
    server
        .await
        .map_err(|e| anyhow!("coordinator task failed: {e}"))??;
    Ok(())
}

/// Creates (or checks) the demo's directory.
fn prepare_dir(asked: Option<&Path>) -> Result<PathBuf> {
    match asked {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: the demo needs a fresh directory (it writes new keys and stores)",
                    dir.display()
                );
            }
            Ok(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            Ok(dir.keep())
        }
    }
}

fn coordinator_config_text(states: &[StateCode], operator: crate::access::TokenDigest) -> String {
    let mut out = String::from(
        "# Written by `tally demo`.\n\
         # An ephemeral loopback port: the coordinator prints the one it got.\n\
         listen = \"127.0.0.1:0\"\n\
         data_dir = \"coordinator-store\"\n\
         key_file = \"keys/coordinator.key\"\n\n\
         [tls]\n\
         cert_file = \"certs/coordinator.crt\"\n\
         key_file = \"certs/coordinator.key\"\n\
         client_ca_file = \"certs/ca.crt\"\n\n\
         [reconcile]\n\
         # 0 (demo setting): a transfer not yet received alerts at once.\n\
         transfer_grace_hours = 0\n\
         tick_seconds = 10\n",
    );
    let _ = write!(
        out,
        "\n# The demo's operator token (its SHA-256): operator.token.\n\
         [[operators]]\nname = \"demo\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n",
        operator.to_hex()
    );
    for state in states {
        let cadence = if state.as_str() == DAILY_STATE {
            24
        } else {
            WEEKLY_HOURS
        };
        let _ = write!(
            out,
            "\n[[members]]\nstate = \"{state}\"\npublic_key_file = \"keys/{state}.pub\"\ncadence_hours = {cadence}\n"
        );
    }
    out
}

/// Writes `nodes/NAME.toml` for a node of `state` and loads it.
fn node_config(dir: &Path, name: &str, state: StateCode, address: &str) -> Result<NodeConfig> {
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes)
        .with_context(|| format!("cannot create {}", nodes.display()))?;
    let path = nodes.join(format!("{name}.toml"));
    let text = format!(
        "# Written by `tally demo`.\n\
         state = \"{state}\"\n\
         key_file = \"../keys/{state}.key\"\n\
         coordinator = \"{address}\"\n\
         coordinator_public_key_file = \"../keys/coordinator.pub\"\n\
         outbox_dir = \"{name}-outbox\"\n\n\
         [retry]\n\
         initial_backoff_ms = 100\n\
         max_backoff_ms = 2000\n\
         max_attempts = 5\n\n\
         [tls]\n\
         ca_file = \"../certs/ca.crt\"\n\
         cert_file = \"../certs/{state}.crt\"\n\
         key_file = \"../certs/{state}.key\"\n"
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(NodeConfig::load(&path)?)
}

/// What the demo planted: alerts per kind, and the seized launchers.
struct Planted {
    counts: BTreeMap<String, usize>,
    story: Vec<StoryCase>,
}

/// Generates the exports, submits both rounds through the nodes, plants the
/// conflicting submission and reports the seizures.
async fn exercise(
    options: &DemoOptions,
    dir: &Path,
    operator: &Target,
    states: &[StateCode],
    rounds: [i64; 2],
    daily_as_of: i64,
) -> Result<Planted> {
    let address = operator.coordinator.as_str();
    let mut scenario_config = ScenarioConfig::new(states.len(), options.items, options.seed);
    scenario_config.story = true;
    let scenario = reconcile_scenario(&scenario_config);
    println!(
        "  inventories:  {} items per state and round (--items), seed {}",
        thousands(options.items as u64),
        options.seed
    );
    println!();

    let phase = Instant::now();
    let generating = Progress::steps(true, 2 * states.len() as u64, "exports", "generating");
    let mut exports = [Vec::new(), Vec::new()];
    let mut rows = 0u64;
    for (r, paths) in exports.iter_mut().enumerate() {
        let round_dir = dir.join("exports").join(format!("round{}", r + 1));
        std::fs::create_dir_all(&round_dir)
            .with_context(|| format!("cannot create {}", round_dir.display()))?;
        for (s, state) in states.iter().enumerate() {
            let csv = scenario.csv(s, r + 1);
            rows += csv.lines().count() as u64 - 1;
            let path = round_dir.join(format!("{state}.csv"));
            std::fs::write(&path, csv)
                .with_context(|| format!("cannot write {}", path.display()))?;
            paths.push(path);
            generating.inc(1);
        }
    }
    generating.finish();
    println!(
        "generated {} exports ({} rows) in {}   {:.1} s",
        2 * states.len(),
        thousands(rows),
        dir.join("exports").display(),
        phase.elapsed().as_secs_f64()
    );

    let mut nodes = Vec::with_capacity(states.len());
    for state in states {
        let config = node_config(dir, state.as_str(), *state, address)?;
        nodes.push(Arc::new(Node::open(config)?));
    }

    for (r, as_of) in rounds.iter().enumerate() {
        if r == 1 {
            plant_conflict(dir, address, states, &exports[1], rounds[1]).await?;
        }
        let phase = Instant::now();
        let as_of_per_state: Vec<i64> = states
            .iter()
            .map(|s| {
                if r == 1 && s.as_str() == DAILY_STATE {
                    daily_as_of
                } else {
                    *as_of
                }
            })
            .collect();
        let items = submit_round(&nodes, &exports[r], &as_of_per_state, r + 1).await?;
        println!(
            "round {} (as of {} UTC{}): 6 snapshots, {} items, signed and accepted   {:.1} s",
            r + 1,
            &utc(*as_of)[..16],
            if r == 1 {
                format!("; {DAILY_STATE} {}", &utc(daily_as_of)[..16])
            } else {
                String::new()
            },
            thousands(items),
            phase.elapsed().as_secs_f64()
        );
    }

    report_seizures(dir, operator, scenario.story()).await?;
    Ok(Planted {
        counts: planted_counts(&scenario, scenario.story().len()),
        story: scenario.story().to_vec(),
    })
}

/// Signs and submits one round: every state's node at once.
async fn submit_round(
    nodes: &[Arc<Node>],
    exports: &[PathBuf],
    as_of: &[i64],
    round: usize,
) -> Result<u64> {
    let progress = Progress::steps(
        true,
        nodes.len() as u64,
        "snapshots",
        format!("round {round}: parsing, signing and submitting"),
    );
    let jobs = nodes
        .iter()
        .zip(exports)
        .zip(as_of)
        .map(|((node, path), as_of)| {
            let node = node.clone();
            let path = path.clone();
            let as_of = *as_of;
            let progress = progress.clone();
            async move {
                let signer = node.clone();
                let prepared =
                    tokio::task::spawn_blocking(move || signer.prepare(&path, Some(as_of), None))
                        .await
                        .map_err(|e| anyhow!("signing task failed: {e}"))??;
                let items = match prepared {
                    Prepared::Signed { items, .. } => items,
                    Prepared::AlreadySigned { sequence } => {
                        bail!("the export was already signed as sequence {sequence}")
                    }
                };
                node.submit_pending()
                    .await
                    .with_context(|| format!("{} could not submit", node.config().state))?;
                progress.inc(1);
                Ok::<u64, anyhow::Error>(items)
            }
        });
    let items = futures::future::try_join_all(jobs).await?;
    progress.finish();
    Ok(items.iter().sum())
}

/// KGZ's standby node, restored without its outbox, signs its round-2
/// export as sequence 1 (the start of a new chain, as `tally node submit
/// --new-chain` does when the coordinator cannot tell it the chain head). The coordinator
/// refuses it and records the equivocation; the next accepted submission
/// reconciles it into a `conflicting_submission` alert.
async fn plant_conflict(
    dir: &Path,
    address: &str,
    states: &[StateCode],
    round2: &[PathBuf],
    as_of: i64,
) -> Result<()> {
    let s = states
        .iter()
        .position(|s| s.as_str() == STANDBY_STATE)
        .ok_or_else(|| anyhow!("{STANDBY_STATE} is not among the demo states"))?;
    let config = node_config(dir, &format!("{STANDBY_STATE}-standby"), states[s], address)?;
    let standby = Arc::new(Node::open(config)?);
    let signer = standby.clone();
    let path = round2[s].clone();
    tokio::task::spawn_blocking(move || signer.prepare(&path, Some(as_of), None))
        .await
        .map_err(|e| anyhow!("signing task failed: {e}"))??;
    match standby.submit_pending().await {
        Err(NodeError::Rejected { code, message, .. }) => {
            println!(
                "{STANDBY_STATE}'s standby node (restored without its outbox) signed a different sequence 1: refused ({code:?})"
            );
            println!("  coordinator: {message}");
            Ok(())
        }
        Err(e) => Err(e).context("the standby node's conflicting submission failed unexpectedly"),
        Ok(_) => bail!("the coordinator accepted a conflicting sequence 1 from the standby node"),
    }
}

/// Reports the story's launchers seized, through the Seizures service, and
/// writes the same report as `exports/seized.csv` for `tally seized report`.
async fn report_seizures(dir: &Path, operator: &Target, story: &[StoryCase]) -> Result<()> {
    let seized_at = now_unix_ms() - 2 * HOUR_MS;
    let place = "Checkpoint 14, from an armed group";
    let items: Vec<proto::SeizedItem> = story
        .iter()
        .map(|c| proto::SeizedItem {
            model: c.model.to_string(),
            serial: c.seized_serial.to_string(),
            seized_at_unix_ms: seized_at,
            place: place.to_string(),
            note: String::new(),
        })
        .collect();
    let mut csv = String::from("model,serial,seized_at,place\n");
    let date = &utc(seized_at)[..10];
    for c in story {
        let _ = writeln!(csv, "{},{},{date},\"{place}\"", c.model, c.seized_serial);
    }
    let csv_path = dir.join("exports").join("seized.csv");
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    let mut client = SeizuresClient::new(connect(operator).await?);
    let response = client
        .report_seizures(proto::ReportSeizuresRequest { items })
        .await
        .map_err(|s| {
            anyhow!(
                "the coordinator refused the seizure report: {}",
                s.message()
            )
        })?
        .into_inner();
    println!(
        "seizure report {}: {} launchers seized at {place} ({})",
        response.report_id,
        response.matches.len(),
        csv_path.display()
    );
    Ok(())
}

/// `n` with thousands separators: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The planted count of each kind, for the table printed by [`report`]:
/// what the generator planted in the exports, plus the seizures, the
/// standby node's conflict and the late daily state.
fn planted_counts(
    scenario: &crate::dev::generate::Scenario,
    seized: usize,
) -> BTreeMap<String, usize> {
    let mut planted: BTreeMap<String, usize> = scenario
        .expected()
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    planted.insert(AlertKind::SeizedItem.to_string(), seized);
    planted.insert(AlertKind::ConflictingSubmission.to_string(), 1);
    planted.insert(AlertKind::SnapshotOverdue.to_string(), 1);
    planted
}

/// Severity strings of the Alerts API, most severe first.
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// Prints what an operator would look at, read from the coordinator: open
/// alerts by kind (Coordinator status), the ten most severe open alerts
/// (Alerts list) and the trail of each seized launcher (Trace).
async fn report(operator: &Target, planted: &Planted) -> Result<()> {
    let channel = connect(operator).await?;
    let status = CoordinatorClient::new(channel.clone())
        .get_status(proto::GetStatusRequest {})
        .await
        .map_err(|s| anyhow!("coordinator status: {}", s.message()))?
        .into_inner();
    println!();
    println!("Open alerts by kind, as the coordinator counts them (tally status):");
    println!("  {:<28} {:>8} {:>8}", "KIND", "PLANTED", "OPEN");
    let mut total = 0;
    let mut mismatched = Vec::new();
    for count in &status.open_alerts {
        let expected = planted.counts.get(&count.kind).copied().unwrap_or(0);
        println!("  {:<28} {:>8} {:>8}", count.kind, expected, count.open);
        total += count.open;
        if expected as u64 != count.open {
            mismatched.push(count.kind.as_str());
        }
    }
    println!(
        "  {:<28} {:>8} {:>8}",
        "total",
        planted.counts.values().sum::<usize>(),
        total
    );
    if mismatched.is_empty() {
        println!("  Every planted discrepancy was found, and nothing else.");
    } else {
        println!(
            "  The coordinator's counts differ from the planted ones for: {}",
            mismatched.join(", ")
        );
    }

    let alerts = open_alerts(channel.clone()).await?;
    println!();
    println!("The ten most severe open alerts (tally alerts list / show ID):");
    for a in most_severe(&alerts, 10) {
        let item = if a.model.is_empty() {
            format!("{} #{}", a.state, a.sequence)
        } else {
            format!("{}/{}", a.model, a.serial)
        };
        println!(
            "  #{:<6} {:<8} {:<25} {:<22} {}",
            a.id,
            a.severity,
            a.kind,
            item,
            a.states.join(",")
        );
        println!("          {}", a.summary);
    }

    println!();
    println!("Custody trails of the seized launchers (tally trace MODEL SERIAL):");
    let mut trace = TraceClient::new(channel).max_decoding_message_size(MAX_TRACE_RESPONSE);
    for case in &planted.story {
        let response = trace
            .trace_item(proto::TraceItemRequest {
                model: case.model.to_string(),
                serial: case.seized_serial.to_string(),
            })
            .await
            .map_err(|s| {
                anyhow!(
                    "trace of {} {}: {}",
                    case.model,
                    case.seized_serial,
                    s.message()
                )
            })?
            .into_inner();
        println!();
        println!(
            "== seized {} {}: {}",
            case.model, case.seized_serial, case.what
        );
        print!("{}", render_table(&response));
    }
    Ok(())
}

/// Every open alert, all pages.
async fn open_alerts(channel: Connection) -> Result<Vec<proto::Alert>> {
    let mut client = AlertsClient::new(channel);
    let mut alerts = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_alerts(proto::ListAlertsRequest {
                status: proto::AlertStatus::Open as i32,
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("listing alerts: {}", s.message()))?
            .into_inner();
        alerts.extend(page.alerts);
        if page.next_page_token.is_empty() {
            return Ok(alerts);
        }
        token = page.next_page_token;
    }
}

/// The `n` most severe alerts: by severity, and within one severity the
/// kinds taken in turn (oldest alert of each kind first), so a long run of
/// one kind does not hide the others.
fn most_severe(alerts: &[proto::Alert], n: usize) -> Vec<&proto::Alert> {
    let rank = |a: &proto::Alert| {
        SEVERITIES
            .iter()
            .position(|s| *s == a.severity)
            .unwrap_or(SEVERITIES.len())
    };
    let mut sorted: Vec<&proto::Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| (rank(a), a.kind.clone(), a.id));
    let mut turn: BTreeMap<&str, usize> = BTreeMap::new();
    let mut keyed: Vec<(usize, usize, &str, u64, &proto::Alert)> = sorted
        .into_iter()
        .map(|a| {
            let t = turn.entry(a.kind.as_str()).or_default();
            *t += 1;
            (rank(a), *t, a.kind.as_str(), a.id, a)
        })
        .collect();
    keyed.sort_by_key(|(rank, turn, kind, id, _)| (*rank, *turn, *kind, *id));
    keyed.into_iter().take(n).map(|k| k.4).collect()
}

fn print_explore(address: &str, dir: &Path, ca_file: &Path, token_file: &Path) {
    let keys = dir.join("keys");
    let bundle = dir.join("KM-87-0412.evidence.json");
    println!();
    println!(
        "Explore it from another terminal (tally is target/release/tally, or use `cargo run --release --`):"
    );
    println!(
        "  export TALLY_CA_FILE={} TALLY_TOKEN=$(cat {})",
        ca_file.display(),
        token_file.display()
    );
    println!("  tally status --coordinator {address}");
    println!("  tally alerts --coordinator {address} list --kind seized_item");
    println!(
        "  tally alerts --coordinator {address} list --kind held_by_several_states --state KAZ"
    );
    println!("  tally alerts --coordinator {address} show ID");
    println!("  tally alerts --coordinator {address} watch");
    println!("  tally trace --coordinator {address} 9P39 KM-87-0412");
    println!(
        "  tally trace --coordinator {address} 9P39 KM-87-0412 --evidence {}",
        bundle.display()
    );
    println!(
        "  tally verify {} --key RUS={} --key KAZ={}",
        bundle.display(),
        keys.join("RUS.pub").display(),
        keys.join("KAZ.pub").display()
    );
    println!();
    println!("The coordinator keeps running at {address} until Ctrl-C.");
}
