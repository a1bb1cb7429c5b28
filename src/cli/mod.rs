//! Command-line interface: flags in, calls into the library, results out.

use crate::operator;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::state::StateCode;

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
pub(crate) const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

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
        /// When the inventory was taken, in milliseconds since the Unix epoch
        /// (default: the export file's modification time). The same file
        /// as of the same or an earlier time than a snapshot already signed
        /// from it is not signed again.
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
        Command::Keygen(args) => crate::operator::setup::keygen(args),
        Command::Coordinator { config } => crate::coordinator::commands::serve(config).await,
        Command::Node(NodeCommand::Submit {
            config,
            export,
            as_of_unix_ms,
            new_chain,
        }) => crate::node::commands::submit(config, export, as_of_unix_ms, new_chain).await,
        Command::Node(NodeCommand::Status { config }) => crate::node::commands::status(config),
        Command::Node(NodeCommand::Watch { config, dir }) => {
            crate::node::commands::watch(config, dir).await
        }
        Command::Health(args) => crate::operator::health::run(args).await,
        Command::Alerts { target, command } => operator::alerts::run(target, command).await,
        Command::Seized { target, command } => operator::seized::run(target, command).await,
        Command::Status { target, format } => operator::status::run(target, format).await,
        Command::Audit { target, command } => operator::audit::run(target, command).await,
        Command::Trace(args) => crate::operator::trace::trace(args).await,
        Command::Verify(args) => crate::operator::trace::verify(args),
        Command::Demo(args) => {
            crate::dev::demo::run(
                crate::dev::demo::DemoOptions {
                    data_dir: args.data,
                    items: args.items,
                    keep_running: args.keep_running,
                    seed: args.seed,
                },
                crate::support::signals::shutdown_signal(),
            )
            .await
        }
        Command::Certs(CertsCommand::Init {
            out,
            states,
            server_names,
        }) => crate::operator::setup::certs_init(out, states, server_names),
        Command::Token(TokenCommand::New { role, name }) => {
            crate::operator::setup::token_new(role, name)
        }
        Command::Export { config, out } => crate::coordinator::commands::export(config, out).await,
        Command::Import { dir, data, config } => {
            crate::coordinator::commands::import(dir, data, config).await
        }
    }
}
