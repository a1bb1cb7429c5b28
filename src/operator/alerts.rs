//! `tally alerts`: list, show, watch, acknowledge, resolve, reopen.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::*;
use crate::proto;

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
            let seq = |r: &Option<proto::SnapshotRef>| {
                r.as_ref()
                    .map_or("-".to_string(), |r| format!("{} #{}", r.state, r.sequence))
            };
            println!(
                "  custody:   custodian {} ({} in {}); last held in {}; absent since {}; held now by {}",
                custodians_text(c),
                c.last_status.join("/"),
                seq(&c.last_listed_in),
                seq(&c.last_held_in),
                seq(&c.absent_since),
                if c.held_now_by.is_empty() {
                    "nobody".to_string()
                } else {
                    c.held_now_by.join(", ")
                },
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

pub async fn run(target: Target, command: AlertsCommand) -> Result<()> {
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
