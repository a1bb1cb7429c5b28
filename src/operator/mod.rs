//! Operator commands: thin gRPC clients for alerts, seizure reports and
//! coordinator status. Tables fit 100 columns; `--format json` prints one
//! stable JSON document (for `watch`, one JSON object per line), described in
//! docs/cli.md ("Output formats").

pub mod alerts;
pub mod audit;
pub mod health;
pub mod seized;
pub mod setup;
pub mod status;
pub mod trace;
pub mod trace_view;

pub use alerts::{AlertsCommand, alert_json};
pub use audit::{AuditCommand, audit_record_json};
pub use seized::SeizedCommand;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::tls::ClientTlsFiles;

use crate::alert::ResolutionReason;
use crate::proto::{
    self, alerts_client::AlertsClient, audit_client::AuditClient,
    coordinator_client::CoordinatorClient, seizures_client::SeizuresClient,
    snapshots_client::SnapshotsClient,
};
use tally_wire::alerts::reason_to_proto;

/// Where the coordinator is.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Coordinator gRPC address.
    #[arg(
        long,
        env = "TALLY_COORDINATOR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub coordinator: String,
    /// CA certificate (PEM) that issued the coordinator's certificate; needed
    /// for an https:// address.
    #[arg(long, env = "TALLY_CA_FILE", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// Bearer token (operators and auditors). Prefer the environment variable:
    /// a command-line argument is visible to other users of the machine.
    #[arg(long, env = "TALLY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

/// Adds the operator's bearer token to every request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to the coordinator that carries the operator's credentials.
pub type Connection = InterceptedService<Channel, BearerToken>;

/// Connects to the coordinator named by `target`, over TLS for https://.
pub async fn connect(target: &Target) -> Result<Connection> {
    let tls = target.ca.as_ref().map(|ca| ClientTlsFiles {
        ca_file: ca.clone(),
        ..ClientTlsFiles::default()
    });
    let token = match &target.token {
        None => None,
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse::<MetadataValue<Ascii>>()
                .context("the token contains characters not allowed in a header")?,
        ),
    };
    let channel = crate::support::tls::endpoint(&target.coordinator, tls.as_ref())?
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the coordinator at {}: {}",
                target.coordinator,
                crate::support::tls::error_chain(&e)
            )
        })?;
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A call the coordinator refused: its message says what was wrong (the
/// status code adds nothing a person at the terminal needs).
pub(super) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

pub(super) fn status_name(code: i32) -> &'static str {
    match proto::AlertStatus::try_from(code) {
        Ok(proto::AlertStatus::Open) => "open",
        Ok(proto::AlertStatus::Acknowledged) => "acknowledged",
        Ok(proto::AlertStatus::Resolved) => "resolved",
        Ok(proto::AlertStatus::Cleared) => "cleared",
        _ => "unknown",
    }
}

pub(super) fn parse_status(s: &str) -> Result<proto::AlertStatus> {
    Ok(match s {
        "open" => proto::AlertStatus::Open,
        "acknowledged" => proto::AlertStatus::Acknowledged,
        "resolved" => proto::AlertStatus::Resolved,
        "cleared" => proto::AlertStatus::Cleared,
        other => bail!("unknown status '{other}': use open, acknowledged, resolved or cleared"),
    })
}

pub(super) fn reason_name(code: i32) -> &'static str {
    ResolutionReason::ALL
        .into_iter()
        .find(|r| reason_to_proto(*r) as i32 == code)
        .map_or("", |r| r.as_str())
}

pub(super) fn snapshot_json(r: &Option<proto::SnapshotRef>) -> Value {
    match r {
        Some(r) => json!({
            "state": r.state, "sequence": r.sequence,
            "digest": hex::encode(&r.digest), "as_of_unix_ms": r.as_of_unix_ms,
        }),
        None => Value::Null,
    }
}

/// The custodians of a custody summary (a coordinator older than the
/// `custodians` field sends only `last_custodian`).
pub(super) fn custodians_text(c: &proto::Custody) -> String {
    if c.custodians.is_empty() {
        c.last_custodian.clone()
    } else {
        c.custodians.join(", ")
    }
}

pub(super) fn custody_json(c: &Option<proto::Custody>) -> Value {
    match c {
        None => Value::Null,
        Some(c) if c.never_reported => json!({ "never_reported": true }),
        Some(c) => json!({
            "never_reported": false,
            "last_custodian": c.last_custodian,
            "last_status": c.last_status,
            "last_held_in": snapshot_json(&c.last_held_in),
            "gone_in": snapshot_json(&c.gone_in),
            "held_now_by": c.held_now_by,
            "custodians": c.custodians,
            "last_listed_in": snapshot_json(&c.last_listed_in),
            "absent_since": snapshot_json(&c.absent_since),
            "declared_to": c.declared_to,
        }),
    }
}

pub(super) fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
