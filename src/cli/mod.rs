//! Command-line interface: flags in, calls into the library, results out.

use crate::operator;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::evidence::{self, BundleError, EntryError};
use crate::node::{Node, Prepared};
use crate::operator::trace_view::{TraceJson, render_table};
use crate::proto::{self, trace_client::TraceClient};
use crate::state::StateCode;
use crate::support::config::{CoordinatorConfig, NodeConfig};
use crate::support::keys;

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Cross-ministry inventory reconciliation"
)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=tally=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 key pair for a member state or for the coordinator.
    Keygen(KeygenArgs),
    /// Run the coordinator: verify, store and answer for signed snapshots.
    Coordinator {
        /// Coordinator configuration (TOML), e.g. config/coordinator.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Member-state node: sign inventory exports and submit them.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Read, watch and act on discrepancy alerts.
    Alerts {
        #[command(flatten)]
        target: operator::Target,
        #[command(subcommand)]
        command: operator::AlertsCommand,
    },
    /// Report seized items and see their custody trails.
    Seized {
        #[command(flatten)]
        target: operator::Target,
        #[command(subcommand)]
        command: operator::SeizedCommand,
    },
    /// List and verify the coordinator's hash-chained audit trail.
    Audit {
        #[command(flatten)]
        target: operator::Target,
        #[command(subcommand)]
        command: operator::AuditCommand,
    },
    /// Member states' last snapshots, who is overdue, current alerts by kind.
    Status {
        #[command(flatten)]
        target: operator::Target,
        #[arg(long, value_enum, default_value_t = operator::Format::Table)]
        format: operator::Format,
    },
    /// Trace one item across every stored snapshot of every state, with
    /// signed evidence for each row.
    Trace(TraceArgs),
    /// Check an evidence bundle offline: every signature and inclusion proof.
    Verify(VerifyArgs),
    /// Run the whole system on this machine: keys, a coordinator on
    /// loopback, six member nodes submitting two rounds of inventories with
    /// planted discrepancies of every kind, a seizure report; then print
    /// the alerts and the seized launchers' custody trails.
    Demo(DemoArgs),
    /// Ask a coordinator's gRPC health service; exit 0 if and only if it is SERVING.
    Health(HealthArgs),
    /// Write every stored snapshot (signed header, signature, receipt,
    /// items), equivocation, seizure report and operator action to a new
    /// directory as portable, verifiable files. Stop the coordinator first.
    Export {
        /// Coordinator configuration (data directory, keys, rules).
        #[arg(long)]
        config: PathBuf,
        /// Directory to write (must be empty or absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Build a fresh data directory from an export, verifying every file
    /// hash, signature, receipt and chain link on the way.
    Import {
        /// The export directory (written by `tally export`).
        dir: PathBuf,
        /// The new data directory (must be empty or absent).
        #[arg(long, value_name = "NEWDIR")]
        data: PathBuf,
        /// Coordinator configuration the store is for: the export's keys must
        /// match it, and its rules rebuild the alerts.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// TLS certificates for the coordinator and the member nodes.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Bearer tokens for operators and auditors.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for keys, configuration, exports and stores (must be empty
    /// or absent; default: a new temporary directory). Kept afterwards.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Items per state in each generated inventory export.
    #[arg(long, default_value_t = crate::dev::demo::DEFAULT_ITEMS)]
    pub items: usize,
    /// Leave the coordinator running (until Ctrl-C) and print the commands
    /// to explore it.
    #[arg(long)]
    pub keep_running: bool,
    /// Seed of the generated inventories (the same seed, the same exports).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Cli {
    /// The log filter when RUST_LOG is not set: the demo runs a coordinator
    /// and six nodes in one process, and their routine logs would bury its
    /// report, so it logs errors only.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "error",
            _ => "info",
        }
    }
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Coordinator address.
    #[arg(long, env = "TALLY_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Service to ask about; empty (the default) means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Time allowed to connect and to answer, e.g. 3s or 500ms.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// CA certificate (PEM) of the coordinator's certificate, for https://.
    #[arg(long, env = "TALLY_CA_FILE", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a demo PKI: a CA, the coordinator's server certificate and one
    /// client certificate per member state (for the demo and docker-compose;
    /// use your own PKI in production).
    Init {
        /// Directory to write the certificates and keys into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Member states to issue node certificates for (default: all six).
        #[arg(long = "state", value_name = "CODE")]
        states: Vec<StateCode>,
        /// Extra DNS names or IP addresses for the coordinator's certificate,
        /// besides localhost, 127.0.0.1, ::1 and coordinator.
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh bearer token and the configuration lines that admit it
    /// (the configuration stores only the token's SHA-256).
    New {
        /// auditor or operator.
        #[arg(long)]
        role: crate::access::Role,
        /// Who the token is for (appears in logs and the audit trail).
        #[arg(long)]
        name: String,
    },
}

/// Default coordinator address of the client commands.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people, at most 100 columns wide.
    Table,
    /// Stable JSON for scripts (see docs/cli.md, "tally trace / tally verify").
    Json,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Model, in any spelling (e.g. 9K38, 9К38).
    #[arg(allow_hyphen_values = true)]
    pub model: String,
    /// Serial, in any spelling (e.g. "ка-0 12"); matched in canonical form.
    #[arg(allow_hyphen_values = true)]
    pub serial: String,
    #[command(flatten)]
    pub target: operator::Target,
    /// Output: a table for people or JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Also write a self-contained evidence bundle (JSON) of the trail to FILE,
    /// for `tally verify`.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Evidence bundle written by `tally trace --evidence`.
    pub file: PathBuf,
    /// A state's public key file (64 hex digits, as `tally keygen` writes);
    /// repeat for every state in the bundle.
    #[arg(long = "key", value_name = "STATE=PUBKEYFILE", value_parser = parse_key_arg)]
    pub keys: Vec<(StateCode, PathBuf)>,
}

fn parse_key_arg(s: &str) -> Result<(StateCode, PathBuf), String> {
    let (state, path) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not STATE=PUBKEYFILE (e.g. KAZ=keys/KAZ.pub)"))?;
    let state = StateCode::parse(state).map_err(|e| e.to_string())?;
    if path.is_empty() {
        return Err(format!("no public key file given for {state}"));
    }
    Ok((state, PathBuf::from(path)))
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The member state the key is for (writes STATE.key and STATE.pub).
    #[arg(
        long,
        conflicts_with = "coordinator",
        required_unless_present = "coordinator"
    )]
    pub state: Option<StateCode>,
    /// Generate the coordinator's receipt-signing key (coordinator.key/.pub).
    #[arg(long)]
    pub coordinator: bool,
    /// Directory to write the key files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Write the public key file here instead of into --out, so that public
    /// keys can be shared without the private ones (created if missing).
    #[arg(long, value_name = "DIR")]
    pub public_out: Option<PathBuf>,
    /// If both key files already exist, keep them and succeed (for set-up
    /// scripts that run more than once); otherwise existing keys are an error.
    #[arg(long)]
    pub keep_existing: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Sign EXPORT as the next snapshot (kept in the outbox) and submit
    /// everything pending, retrying until the coordinator accepts it.
    Submit {
        /// Node configuration (TOML), e.g. config/nodes/RUS.toml.
        #[arg(long)]
        config: PathBuf,
        /// Inventory export: CSV with header model,serial,status,site,counterparty.
        export: PathBuf,
        /// When the inventory was taken, in milliseconds since the Unix epoch (default: now).
        #[arg(long)]
        as_of_unix_ms: Option<i64>,
        /// With an empty outbox, start the state's chain at sequence 1 even if
        /// the coordinator cannot be reached to confirm that the state has
        /// never submitted (refused if the coordinator holds a chain for it).
        #[arg(long)]
        new_chain: bool,
    },
    /// Show the last accepted sequence and anything still pending.
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// Watch DIR for export files and submit each, in order of arrival, until
    /// Ctrl-C or SIGTERM. Only complete `*.csv` files are read (write under
    /// another name, then rename); accepted files move to DIR/submitted/,
    /// refused ones to DIR/rejected/ with a NAME.csv.reason.txt.
    Watch {
        /// Node configuration (TOML), e.g. config/nodes/RUS.toml.
        #[arg(long)]
        config: PathBuf,
        /// The drop folder.
        dir: PathBuf,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen(args),
        Command::Coordinator { config } => coordinator(config).await,
        Command::Node(NodeCommand::Submit {
            config,
            export,
            as_of_unix_ms,
            new_chain,
        }) => node_submit(config, export, as_of_unix_ms, new_chain).await,
        Command::Node(NodeCommand::Status { config }) => node_status(config),
        Command::Node(NodeCommand::Watch { config, dir }) => node_watch(config, dir).await,
        Command::Health(args) => health(args).await,
        Command::Alerts { target, command } => operator::alerts(target, command).await,
        Command::Seized { target, command } => operator::seized(target, command).await,
        Command::Status { target, format } => operator::status(target, format).await,
        Command::Audit { target, command } => operator::audit(target, command).await,
        Command::Trace(args) => trace(args).await,
        Command::Verify(args) => verify(args),
        Command::Demo(args) => {
            crate::dev::demo::run(
                crate::dev::demo::DemoOptions {
                    data_dir: args.data,
                    items: args.items,
                    keep_running: args.keep_running,
                    seed: args.seed,
                },
                shutdown_signal(),
            )
            .await
        }
        Command::Certs(CertsCommand::Init {
            out,
            states,
            server_names,
        }) => certs_init(out, states, server_names),
        Command::Token(TokenCommand::New { role, name }) => token_new(role, name),
        Command::Export { config, out } => archive_export(config, out).await,
        Command::Import { dir, data, config } => archive_import(dir, data, config).await,
    }
}

async fn archive_export(config: PathBuf, out: PathBuf) -> Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    let settings = crate::coordinator::archive::ExportSettings::from_config(&config)?;
    let data = config.data_dir.clone();
    let target = out.clone();
    let summary = tokio::task::spawn_blocking(move || {
        crate::coordinator::archive::export(
            &data,
            &settings,
            &target,
            crate::coordinator::admission::now_unix_ms(),
        )
    })
    .await??;
    let c = summary.counts;
    println!(
        "exported {} snapshots ({} items), {} equivocations, {} seizure reports, {} operator actions to {}",
        c.snapshots,
        c.items,
        c.equivocations,
        c.seizure_reports,
        c.operator_actions,
        out.display()
    );
    Ok(())
}

async fn archive_import(dir: PathBuf, data: PathBuf, config: Option<PathBuf>) -> Result<()> {
    let options = match config {
        Some(path) => crate::coordinator::archive::ImportOptions::from_config(
            &CoordinatorConfig::load(&path)?,
        )?,
        None => crate::coordinator::archive::ImportOptions::default(),
    };
    let (from, to) = (dir.clone(), data.clone());
    let summary = tokio::task::spawn_blocking(move || {
        crate::coordinator::archive::import(&from, &to, &options)
    })
    .await?
    .with_context(|| format!("import of {} refused; nothing was written", dir.display()))?;
    for skipped in &summary.skipped_actions {
        eprintln!("warning: operator action not re-applied: {skipped}");
    }
    let c = summary.counts;
    println!(
        "verified and imported {} snapshots ({} items), {} equivocations, {} seizure reports, {} operator actions into {}",
        c.snapshots,
        c.items,
        c.equivocations,
        c.seizure_reports,
        c.operator_actions,
        data.display()
    );
    Ok(())
}

/// Largest trace response accepted: every entry carries its evidence (about
/// 1 KiB), so a long-lived item in many snapshots exceeds gRPC's 4 MiB default.
const MAX_TRACE_RESPONSE: usize = 256 << 20;

async fn trace(args: TraceArgs) -> Result<()> {
    let channel = operator::connect(&args.target).await?;
    let mut client = TraceClient::new(channel).max_decoding_message_size(MAX_TRACE_RESPONSE);
    let response = client
        .trace_item(proto::TraceItemRequest {
            model: args.model.clone(),
            serial: args.serial.clone(),
        })
        .await
        .map_err(|s| {
            anyhow!(
                "the coordinator refused the trace ({:?}): {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();

    if let Some(path) = &args.evidence {
        let bundle = tally_wire::evidence::bundle_from_trace(&response)?;
        std::fs::write(path, bundle.to_json()?)
            .with_context(|| format!("cannot write the evidence bundle {}", path.display()))?;
        let mut states: Vec<&str> = bundle.entries.iter().map(|e| e.state.as_str()).collect();
        states.sort_unstable();
        states.dedup();
        let keys: Vec<String> = states
            .iter()
            .map(|s| format!(" --key {s}={s}.pub"))
            .collect();
        eprintln!(
            "evidence bundle with {} entries written to {}; check it offline with: tally verify {}{}",
            bundle.entries.len(),
            path.display(),
            path.display(),
            keys.concat()
        );
    }
    match args.format {
        OutputFormat::Table => print!("{}", render_table(&response)),
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&TraceJson::from_response(&response)?)
                .context("cannot encode the trace as JSON")?;
            println!("{json}");
        }
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut keys = BTreeMap::new();
    for (state, path) in &args.keys {
        let key = keys::read_verifying_key(path)?;
        if keys.insert(*state, key).is_some() {
            bail!("--key {state} is given more than once");
        }
    }
    match evidence::verify_file(&bytes, &keys) {
        Ok(verified) => {
            println!("{}: {}", args.file.display(), verified.summary());
            Ok(())
        }
        Err(e) => {
            let hint = match &e {
                BundleError::Entry {
                    source: EntryError::MissingKey { state },
                    ..
                } => format!(" (pass --key {state}=PUBKEYFILE)"),
                _ => String::new(),
            };
            bail!("{} is NOT valid evidence: {e}{hint}", args.file.display())
        }
    }
}

fn certs_init(out: PathBuf, states: Vec<StateCode>, server_names: Vec<String>) -> Result<()> {
    let states = if states.is_empty() {
        crate::state::MEMBER_STATES
            .iter()
            .map(|s| StateCode::parse(s))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        states
    };
    let pki = crate::support::certs::init(&out, &states, &server_names)?;
    println!("CA certificate:          {}", pki.ca_cert.display());
    println!(
        "coordinator certificate: {} (key {})",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    for (state, cert, key) in &pki.clients {
        println!(
            "{state} node certificate:  {} (key {})",
            cert.display(),
            key.display()
        );
    }
    println!(
        "private keys are mode 0600; {} signs certificates: keep it offline",
        out.join("ca.key").display()
    );
    Ok(())
}

fn token_new(role: crate::access::Role, name: String) -> Result<()> {
    if name.trim().is_empty() || name.contains(['"', '\\', '\n']) {
        bail!("--name must be a non-empty plain name (no quotes, backslashes or newlines)");
    }
    let token = crate::support::keys::new_token()?;
    let digest = crate::access::TokenDigest::of(&token);
    println!("token for {name} ({role}); give it to them, it is not stored anywhere:");
    println!();
    println!("    {token}");
    println!();
    println!("add to the coordinator configuration, then restart it:");
    println!();
    println!("[[operators]]");
    println!("name = \"{name}\"");
    println!("role = \"{role}\"");
    println!("token_sha256 = \"{}\"", digest.to_hex());
    Ok(())
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let name = match (&args.state, args.coordinator) {
        (Some(state), false) => state.to_string(),
        (None, true) => "coordinator".to_string(),
        _ => bail!("pass either --state CODE or --coordinator"),
    };
    let public_dir = args.public_out.as_deref().unwrap_or(&args.out);
    let (private, _) = keys::key_paths(&args.out, &name);
    let (_, public) = keys::key_paths(public_dir, &name);
    if args.keep_existing && private.exists() && public.exists() {
        let key = keys::read_signing_key(&private)?;
        if keys::read_verifying_key(&public)? != key.verifying_key() {
            bail!(
                "{} and {} exist but do not belong together; remove both to generate a new pair",
                private.display(),
                public.display()
            );
        }
        println!(
            "kept existing keys: {} and {}",
            private.display(),
            public.display()
        );
        return Ok(());
    }
    let key = keys::generate()?;
    let (private, public) = keys::write_key_files(&args.out, public_dir, &name, &key)?;
    println!(
        "private key: {} (mode 0600, keep it secret)",
        private.display()
    );
    println!("public key:  {}", public.display());
    println!(
        "public key (hex): {}",
        hex::encode(key.verifying_key().to_bytes())
    );
    Ok(())
}

async fn health(args: HealthArgs) -> Result<()> {
    crate::operator::health::check(
        &args.coordinator,
        &args.service,
        args.timeout,
        args.ca.as_deref(),
    )
    .await?;
    println!("{}: SERVING", args.coordinator);
    Ok(())
}

async fn node_watch(config: PathBuf, dir: PathBuf) -> Result<()> {
    let config = NodeConfig::load(&config)?;
    let node = Node::open(config)?;
    let outcomes = crate::node::watch::watch(&node, &dir, shutdown_signal()).await?;
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, crate::node::watch::Outcome::Submitted { .. }))
        .count();
    println!(
        "stopped watching {}: {accepted} exports accepted, {} rejected",
        dir.display(),
        outcomes.len() - accepted
    );
    Ok(())
}

/// Resolves when the process receives Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Prints one of the coordinator's start-up lines. `println!` panics when
/// standard output is a pipe nobody reads any more (a supervisor that read
/// the address and closed it, `| head -1`); a service must not stop for
/// that, so a failed write is only logged.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| {
        out.write_all(b"\n")?;
        out.flush()
    }) {
        tracing::warn!(error = %e, "cannot write to standard output; carrying on without it");
    }
}

async fn coordinator(config: PathBuf) -> Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    // Opening a large store rebuilds the reconciliation state from every
    // stored snapshot: seconds to minutes, worth a spinner on a terminal.
    let progress = crate::support::progress::Progress::spinner(
        true,
        "opening the store and rebuilding reconciliation state from stored snapshots",
    );
    let coordinator = crate::coordinator::server::build_coordinator(&config);
    progress.finish();
    let coordinator = coordinator?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let options = crate::coordinator::server::ServeOptions::from_config(&config)?;
    announce(format_args!(
        "coordinator listening on {}",
        listener.local_addr()?
    ));
    announce(format_args!(
        "transport: {}",
        if options.tls.is_some() {
            "TLS (member nodes by client certificate, people by bearer token)"
        } else {
            "plaintext (insecure = true: development only)"
        }
    ));
    let metrics = match config.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            announce(format_args!(
                "metrics on http://{}/metrics",
                l.local_addr()?
            ));
            Some(l)
        }
        None => None,
    };
    crate::coordinator::server::run(coordinator, listener, metrics, shutdown_signal(), options)
        .await?;
    Ok(())
}

async fn node_submit(
    config: PathBuf,
    export: PathBuf,
    as_of: Option<i64>,
    new_chain: bool,
) -> Result<()> {
    let config = NodeConfig::load(&config)?;
    let mut node = Node::open(config)?;
    // Drawn only when stderr is a terminal.
    node.show_progress(true);
    let head = crate::node::submit::chain_head_for_signing(&node, new_chain).await?;
    match node.prepare(&export, as_of, head)? {
        Prepared::Signed { sequence, items } => {
            println!(
                "signed {} as sequence {sequence} ({items} items), stored in the outbox",
                export.display()
            );
        }
        Prepared::AlreadySigned { sequence } => {
            println!(
                "{} was already signed as sequence {sequence}; not signing it again",
                export.display()
            );
        }
    }
    let receipts = crate::node::submit::deliver_pending(&node).await?;
    for receipt in receipts {
        println!(
            "accepted: state {} sequence {} digest {} at {} (unix ms)",
            receipt.state, receipt.sequence, receipt.digest, receipt.accepted_at_unix_ms
        );
    }
    Ok(())
}

fn node_status(config: PathBuf) -> Result<()> {
    let config = NodeConfig::load(&config)?;
    let outbox = crate::node::Outbox::open(&config.outbox_dir)?;
    let entries = outbox.entries()?;
    let accepted = entries.iter().rev().find(|e| e.receipt.is_some());
    println!("state: {}", config.state);
    match accepted {
        Some(e) => println!(
            "last accepted: sequence {} digest {}",
            e.sequence(),
            e.digest()
        ),
        None => println!("last accepted: none"),
    }
    let pending: Vec<_> = entries.iter().filter(|e| e.receipt.is_none()).collect();
    if pending.is_empty() {
        println!("pending: none");
    }
    for e in pending {
        println!(
            "pending: sequence {} digest {} ({} items)",
            e.sequence(),
            e.digest(),
            e.signed.header.item_count
        );
    }
    Ok(())
}
