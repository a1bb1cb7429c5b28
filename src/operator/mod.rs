//! Operator commands: thin gRPC clients for alerts, seizure reports and
//! coordinator status. Tables fit 100 columns; `--format json` prints one
//! stable JSON document (for `watch`, one JSON object per line), described in
//! docs/cli.md ("Output formats").

pub mod health;
pub mod trace_view;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::tls::ClientTlsFiles;

use crate::coordinator::grpc::alerts::reason_to_proto;
use crate::coordinator::storage::alerts::ResolutionReason;
use crate::proto::{
    self, alerts_client::AlertsClient, audit_client::AuditClient,
    coordinator_client::CoordinatorClient, seizures_client::SeizuresClient,
    snapshots_client::SnapshotsClient,
};

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

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// Alert kind, e.g. held_by_several_states.
        #[arg(long)]
        kind: Option<String>,
        /// A state involved, e.g. KAZ.
        #[arg(long)]
        state: Option<String>,
        /// Model code (any spelling).
        #[arg(long)]
        model: Option<String>,
        /// open, acknowledged, resolved or cleared.
        #[arg(long)]
        status: Option<String>,
        /// At most this many alerts (all pages are fetched until then).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One alert with its evidence and history.
    Show {
        id: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print alert events as they happen, starting after CURSOR.
    Watch {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Acknowledge an open alert.
    Ack {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resolve an alert with a reason: false_positive, data_entry_error,
    /// located, transfer_confirmed, written_off, referred_for_investigation.
    Resolve {
        id: u64,
        #[arg(long)]
        reason: ResolutionReason,
        #[arg(long)]
        note: String,
    },
    /// Reopen a resolved alert whose condition still holds.
    Reopen {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SeizedCommand {
    /// Report seized items from a CSV file with header model,serial,seized_at,place
    /// (seized_at: YYYY-MM-DD or RFC 3339, UTC).
    Report {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit records in order: who did what, when, from where, and
    /// whether it was refused.
    List {
        /// First record to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Fetch every record and check the hash chain and the coordinator's
    /// signatures here; exit non-zero naming the first bad record.
    Verify {
        /// The coordinator's public key file (as written by `tally keygen`),
        /// if you hold a copy: checked against the key the coordinator
        /// reports, so a replaced coordinator cannot vouch for its own trail.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

/// A call the coordinator refused: its message says what was wrong (the
/// status code adds nothing a person at the terminal needs).
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

fn status_name(code: i32) -> &'static str {
    match proto::AlertStatus::try_from(code) {
        Ok(proto::AlertStatus::Open) => "open",
        Ok(proto::AlertStatus::Acknowledged) => "acknowledged",
        Ok(proto::AlertStatus::Resolved) => "resolved",
        Ok(proto::AlertStatus::Cleared) => "cleared",
        _ => "unknown",
    }
}

fn parse_status(s: &str) -> Result<proto::AlertStatus> {
    Ok(match s {
        "open" => proto::AlertStatus::Open,
        "acknowledged" => proto::AlertStatus::Acknowledged,
        "resolved" => proto::AlertStatus::Resolved,
        "cleared" => proto::AlertStatus::Cleared,
        other => bail!("unknown status '{other}': use open, acknowledged, resolved or cleared"),
    })
}

fn reason_name(code: i32) -> &'static str {
    ResolutionReason::ALL
        .into_iter()
        .find(|r| reason_to_proto(*r) as i32 == code)
        .map_or("", |r| r.as_str())
}

fn snapshot_json(r: &Option<proto::SnapshotRef>) -> Value {
    match r {
        Some(r) => json!({
            "state": r.state, "sequence": r.sequence,
            "digest": hex::encode(&r.digest), "as_of_unix_ms": r.as_of_unix_ms,
        }),
        None => Value::Null,
    }
}

fn custody_json(c: &Option<proto::Custody>) -> Value {
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
        }),
    }
}

/// The documented JSON form of an alert.
pub fn alert_json(a: &proto::Alert) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "model": a.model,
        "serial": a.serial,
        "state": a.state,
        "counterparty": a.counterparty,
        "sequence": a.sequence,
        "status": status_name(a.status),
        "severity": a.severity,
        "spellings": a.spellings,
        "states": a.states,
        "summary": a.summary,
        "opened_at_unix_ms": a.opened_at_unix_ms,
        "updated_at_unix_ms": a.updated_at_unix_ms,
        "previous_occurrence": a.previous_occurrence,
        "evidence": a.evidence.iter().map(|e| json!({
            "snapshot": snapshot_json(&e.snapshot),
            "role": e.role,
            "lines": e.lines.iter().map(|l| json!({
                "model": l.model, "serial": l.serial, "status": l.status,
                "site": l.site, "counterparty": l.counterparty,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "history": a.history.iter().map(|h| json!({
            "cursor": h.cursor, "at_unix_ms": h.at_unix_ms, "action": h.action,
            "by": snapshot_json(&h.by), "note": h.note, "reason": reason_name(h.reason),
        })).collect::<Vec<_>>(),
        "custody": custody_json(&a.custody),
    })
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn item(a: &proto::Alert) -> String {
    if a.model.is_empty() {
        format!(
            "{}{}",
            a.state,
            if a.sequence > 0 {
                format!(" #{}", a.sequence)
            } else {
                String::new()
            }
        )
    } else {
        format!("{}/{}", a.model, a.serial)
    }
}

fn print_alert_table(alerts: &[proto::Alert]) {
    println!(
        "{:>6}  {:<25} {:<20} {:<15} {:<12} {:<8}",
        "ID", "KIND", "ITEM", "STATES", "STATUS", "SEVERITY"
    );
    for a in alerts {
        println!(
            "{:>6}  {:<25} {:<20} {:<15} {:<12} {:<8}",
            a.id,
            cut(&a.kind, 25),
            cut(&item(a), 20),
            cut(&a.states.join(","), 15),
            status_name(a.status),
            a.severity
        );
    }
}

fn print_alert_detail(a: &proto::Alert) {
    println!("alert {} — {} ({})", a.id, a.kind, a.severity);
    println!("  {}", a.summary);
    println!("  status:    {}", status_name(a.status));
    println!("  item:      {}", item(a));
    if !a.spellings.is_empty() {
        println!("  spellings: {}", a.spellings.join(", "));
    }
    println!("  states:    {}", a.states.join(", "));
    if a.previous_occurrence > 0 {
        println!("  previous occurrence: alert {}", a.previous_occurrence);
    }
    if let Some(c) = &a.custody {
        if c.never_reported {
            println!("  custody:   never reported by any member");
        } else {
            println!(
                "  custody:   last on the books of {} ({}); last held in sequence {}; gone in sequence {}",
                c.last_custodian,
                c.last_status.join("/"),
                c.last_held_in
                    .as_ref()
                    .map_or("-".into(), |r| r.sequence.to_string()),
                c.gone_in
                    .as_ref()
                    .map_or("-".into(), |r| r.sequence.to_string()),
            );
        }
    }
    println!("  evidence:");
    for e in &a.evidence {
        if let Some(s) = &e.snapshot {
            println!(
                "    {} sequence {} ({}): {}",
                s.state,
                s.sequence,
                &hex::encode(&s.digest)[..16],
                e.role
            );
        }
        for l in &e.lines {
            let cp = if l.counterparty.is_empty() {
                String::new()
            } else {
                format!(" → {}", l.counterparty)
            };
            println!(
                "      {} {} {} {}{}",
                l.model, l.serial, l.status, l.site, cp
            );
        }
    }
    println!("  history:");
    for h in &a.history {
        let reason = reason_name(h.reason);
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" [{reason}]")
        };
        println!(
            "    #{:<6} {:<13}{} {}",
            h.cursor,
            h.action,
            reason,
            cut(&h.note, 60)
        );
    }
}

pub async fn alerts(target: Target, command: AlertsCommand) -> Result<()> {
    let mut client = AlertsClient::new(connect(&target).await?);
    match command {
        AlertsCommand::List {
            kind,
            state,
            model,
            status,
            limit,
            format,
        } => {
            let status = status.as_deref().map(parse_status).transpose()?;
            let mut found = Vec::new();
            let mut token = String::new();
            while found.len() < limit {
                let page = client
                    .list_alerts(proto::ListAlertsRequest {
                        kind: kind.clone().unwrap_or_default(),
                        state: state.clone().unwrap_or_default(),
                        model: model.clone().unwrap_or_default(),
                        status: status.map_or(0, |s| s as i32),
                        opened_since_unix_ms: 0,
                        page_size: (limit - found.len()).min(1000) as u32,
                        page_token: token.clone(),
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                found.extend(page.alerts);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "alerts": found.iter().map(alert_json).collect::<Vec<_>>()
                    }))?
                ),
                Format::Table => print_alert_table(&found),
            }
        }
        AlertsCommand::Show { id, format } => {
            let a = client
                .get_alert(proto::GetAlertRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&alert_json(&a))?),
                Format::Table => print_alert_detail(&a),
            }
        }
        AlertsCommand::Watch { from, format } => {
            let mut stream = client
                .watch_alerts(proto::WatchAlertsRequest { after_cursor: from })
                .await
                .map_err(refused)?
                .into_inner();
            let mut last = from;
            while let Some(e) = stream.message().await.map_err(refused)? {
                last = e.cursor;
                match format {
                    Format::Json => println!(
                        "{}",
                        json!({
                            "cursor": e.cursor, "alert_id": e.alert_id, "action": e.action,
                            "at_unix_ms": e.at_unix_ms, "kind": e.kind,
                            "status": status_name(e.status), "summary": e.summary,
                        })
                    ),
                    Format::Table => println!(
                        "#{:<7} alert {:<6} {:<13} {}",
                        e.cursor,
                        e.alert_id,
                        e.action,
                        cut(&e.summary, 66)
                    ),
                }
            }
            // The coordinator ends watch streams when it shuts down.
            eprintln!(
                "the coordinator ended the watch (shutting down?); resume with --from {last}"
            );
        }
        AlertsCommand::Ack { id, note } => {
            let a = client
                .acknowledge_alert(proto::AcknowledgeAlertRequest { id, note })
                .await
                .map_err(refused)?
                .into_inner();
            println!("alert {} is now {}", a.id, status_name(a.status));
        }
        AlertsCommand::Resolve { id, reason, note } => {
            let a = client
                .resolve_alert(proto::ResolveAlertRequest {
                    id,
                    reason: reason_to_proto(reason) as i32,
                    note,
                })
                .await
                .map_err(refused)?
                .into_inner();
            println!(
                "alert {} is now {} ({})",
                a.id,
                status_name(a.status),
                reason.as_str()
            );
        }
        AlertsCommand::Reopen { id, note } => {
            let a = client
                .reopen_alert(proto::ReopenAlertRequest { id, note })
                .await
                .map_err(refused)?
                .into_inner();
            println!("alert {} is now {}", a.id, status_name(a.status));
        }
    }
    Ok(())
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339 into Unix milliseconds.
fn parse_time(s: &str) -> Result<i64> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z'))
        .with_context(|| format!("'{s}' is not a date (YYYY-MM-DD) or RFC 3339 time"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

fn read_seizures(file: &PathBuf) -> Result<Vec<proto::SeizedItem>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    if header != ["model", "serial", "seized_at", "place"] {
        bail!(
            "{}: line 1: expected header 'model,serial,seized_at,place', found '{}'",
            file.display(),
            header.join(",")
        );
    }
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        match record {
            Ok(r) if r.len() == 4 => match parse_time(&r[2]) {
                Ok(at) => items.push(proto::SeizedItem {
                    model: r[0].to_string(),
                    serial: r[1].to_string(),
                    seized_at_unix_ms: at,
                    place: r[3].to_string(),
                    note: String::new(),
                }),
                Err(e) => problems.push(format!(
                    "{}:{line}: column 'seized_at': {e:#}",
                    file.display()
                )),
            },
            Ok(r) => problems.push(format!(
                "{}:{line}: expected 4 fields, found {}",
                file.display(),
                r.len()
            )),
            Err(e) => problems.push(format!("{}:{line}: {e}", file.display())),
        }
    }
    if !problems.is_empty() {
        bail!("nothing reported:\n{}", problems.join("\n"));
    }
    Ok(items)
}

pub async fn seized(target: Target, command: SeizedCommand) -> Result<()> {
    let SeizedCommand::Report { file, format } = command;
    let items = read_seizures(&file)?;
    let mut client = SeizuresClient::new(connect(&target).await?);
    let response = client
        .report_seizures(proto::ReportSeizuresRequest { items })
        .await
        .map_err(refused)?
        .into_inner();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "report_id": response.report_id,
                "matches": response.matches.iter().map(|m| json!({
                    "model": m.model, "serial": m.serial, "alert_id": m.alert_id,
                    "custody": custody_json(&m.custody),
                })).collect::<Vec<_>>(),
            }))?
        ),
        Format::Table => {
            println!("seizure report {} recorded", response.report_id);
            for m in &response.matches {
                let trail = match &m.custody {
                    Some(c) if c.never_reported => "never reported by any member".to_string(),
                    Some(c) => format!(
                        "last on the books of {} ({}), gone in sequence {}",
                        c.last_custodian,
                        c.last_status.join("/"),
                        c.gone_in
                            .as_ref()
                            .map_or("-".into(), |r| r.sequence.to_string())
                    ),
                    None => String::new(),
                };
                println!(
                    "  {:<22} alert {:<6} {}",
                    cut(&format!("{}/{}", m.model, m.serial), 22),
                    m.alert_id,
                    cut(&trail, 60)
                );
            }
        }
    }
    Ok(())
}

pub async fn status(target: Target, format: Format) -> Result<()> {
    let mut client = CoordinatorClient::new(connect(&target).await?);
    let st = client
        .get_status(proto::GetStatusRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "members": st.members.iter().map(|m| json!({
                    "state": m.state, "last_sequence": m.last_sequence,
                    "last_as_of_unix_ms": m.last_as_of_unix_ms,
                    "last_accepted_at_unix_ms": m.last_accepted_at_unix_ms, "overdue": m.overdue,
                })).collect::<Vec<_>>(),
                "open_alerts": st.open_alerts.iter().map(|c| (c.kind.clone(), json!(c.open))).collect::<serde_json::Map<_, _>>(),
                "last_cursor": st.last_cursor,
            }))?
        ),
        Format::Table => {
            println!(
                "{:<6} {:>9} {:>15} {:<8}",
                "STATE", "SEQUENCE", "AS OF (ms)", "OVERDUE"
            );
            for m in &st.members {
                let seq = if m.last_sequence == 0 {
                    "never".to_string()
                } else {
                    m.last_sequence.to_string()
                };
                println!(
                    "{:<6} {:>9} {:>15} {:<8}",
                    m.state,
                    seq,
                    m.last_as_of_unix_ms,
                    if m.overdue { "yes" } else { "" }
                );
            }
            println!();
            println!("{:<28} {:>6}", "CURRENT ALERTS", "COUNT");
            for c in &st.open_alerts {
                println!("{:<28} {:>6}", c.kind, c.open);
            }
        }
    }
    Ok(())
}

/// Records from `from` on, at most `limit`, page by page.
async fn audit_records(
    client: &mut AuditClient<Connection>,
    from: u64,
    limit: usize,
) -> Result<Vec<proto::AuditRecord>> {
    let mut records: Vec<proto::AuditRecord> = Vec::new();
    let mut next = from.max(1);
    while records.len() < limit {
        let page = client
            .list_audit_records(proto::ListAuditRecordsRequest {
                from_sequence: next,
                limit: (limit - records.len()).min(1000) as u32,
            })
            .await
            .map_err(refused)?
            .into_inner();
        let Some(last) = page.records.last().map(|r| r.sequence) else {
            break;
        };
        records.extend(page.records);
        if last >= page.last_sequence || last == u64::MAX {
            break;
        }
        next = last + 1;
    }
    Ok(records)
}

fn audit_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The documented JSON form of an audit record.
pub fn audit_record_json(r: &proto::AuditRecord) -> Value {
    json!({
        "sequence": r.sequence,
        "at_unix_ms": r.at_unix_ms,
        "actor": r.actor,
        "peer": r.peer,
        "action": r.action,
        "description": r.description,
        "outcome": r.outcome,
        "reason": r.reason,
        "hash": hex::encode(&r.hash),
        "signature": hex::encode(&r.signature),
        "encoding": hex::encode(&r.encoding),
    })
}

pub async fn audit(target: Target, command: AuditCommand) -> Result<()> {
    let connection = connect(&target).await?;
    let mut client = AuditClient::new(connection.clone());
    match command {
        AuditCommand::List {
            from,
            limit,
            format,
        } => {
            let records = audit_records(&mut client, from, limit).await?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "records": records.iter().map(audit_record_json).collect::<Vec<_>>()
                    }))?
                ),
                Format::Table => {
                    println!(
                        "{:>5} {:<20} {:<16} {:<36} OUTCOME",
                        "SEQ", "TIME (UTC)", "ACTOR", "ACTION"
                    );
                    for r in &records {
                        println!(
                            "{:>5} {:<20} {:<16} {:<36} {}",
                            r.sequence,
                            audit_time(r.at_unix_ms),
                            cut(&r.actor, 16),
                            cut(&r.description, 36),
                            r.outcome
                        );
                        let from = if r.peer.is_empty() {
                            String::new()
                        } else {
                            format!("from {}", r.peer)
                        };
                        let detail = match (from.is_empty(), r.reason.is_empty()) {
                            (true, true) => continue,
                            (false, true) => from,
                            (true, false) => r.reason.clone(),
                            (false, false) => format!("{from}: {}", r.reason),
                        };
                        println!("      {}", cut(&detail, 94));
                    }
                }
            }
        }
        AuditCommand::Verify { key: key_file } => {
            let info = SnapshotsClient::new(connection)
                .get_coordinator_info(proto::GetCoordinatorInfoRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let key_bytes: [u8; 32] = info.public_key.as_ref().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "the coordinator's public key is {} bytes, not 32",
                    info.public_key.len()
                )
            })?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
                .context("the coordinator's public key is not a valid Ed25519 key")?;
            if let Some(file) = &key_file {
                let expected = crate::support::keys::read_verifying_key(file)?;
                if expected != key {
                    bail!(
                        "the coordinator reports public key {}, not the one in {}: \
                         this is not the coordinator whose trail you mean to check",
                        hex::encode(key.to_bytes()),
                        file.display()
                    );
                }
            }
            let records = audit_records(&mut client, 1, usize::MAX).await?;
            let sealed: Vec<_> = records
                .iter()
                .map(crate::coordinator::grpc::audit::record_from_proto)
                .collect();
            match crate::audit::verify(&sealed, &key) {
                Ok(chain) => println!(
                    "audit trail intact: {} records, head {}",
                    chain.records,
                    hex::encode(chain.head)
                ),
                Err(broken) => bail!("audit trail broken: {broken}"),
            }
        }
    }
    Ok(())
}
