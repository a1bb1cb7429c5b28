//! Command-line interface: flags in, calls into the library, results out.

pub mod operator;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{CoordinatorConfig, NodeConfig};
use crate::keys;
use crate::node::{Node, Prepared};
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
    /// Member states' last snapshots, who is overdue, open alerts by kind.
    Status {
        #[command(flatten)]
        target: operator::Target,
        #[arg(long, value_enum, default_value_t = operator::Format::Table)]
        format: operator::Format,
    },
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
    },
    /// Show the last accepted sequence and anything still pending.
    Status {
        #[arg(long)]
        config: PathBuf,
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
        }) => node_submit(config, export, as_of_unix_ms).await,
        Command::Node(NodeCommand::Status { config }) => node_status(config),
        Command::Alerts { target, command } => operator::alerts(target, command).await,
        Command::Seized { target, command } => operator::seized(target, command).await,
        Command::Status { target, format } => operator::status(target, format).await,
    }
}

fn keygen(args: KeygenArgs) -> Result<()> {
    let name = match (&args.state, args.coordinator) {
        (Some(state), false) => state.to_string(),
        (None, true) => "coordinator".to_string(),
        _ => bail!("pass either --state CODE or --coordinator"),
    };
    let key = keys::generate()?;
    let (private, public) = keys::write_key_pair(&args.out, &name, &key)?;
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

async fn coordinator(config: PathBuf) -> Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    let coordinator = crate::server::build_coordinator(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    println!("coordinator listening on {}", listener.local_addr()?);
    crate::server::serve(coordinator, listener, shutdown_signal()).await?;
    Ok(())
}

async fn node_submit(config: PathBuf, export: PathBuf, as_of: Option<i64>) -> Result<()> {
    let config = NodeConfig::load(&config)?;
    let node = Node::open(config)?;
    // A node with an empty outbox continues the coordinator's chain for this
    // state (e.g. after a reinstall) rather than signing a conflicting
    // sequence 1. If the coordinator cannot be reached, start a new chain.
    let head = if node.outbox().last()?.is_none() {
        match node.fetch_chain_head().await {
            Ok(head) => head,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "coordinator unreachable; starting the chain at sequence 1");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
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
    for receipt in node.submit_pending().await? {
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
