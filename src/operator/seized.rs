//! `tally seized report`: a seizure CSV in, each item's custody out.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;

use super::*;
use crate::proto;

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

pub async fn run(target: Target, command: SeizedCommand) -> Result<()> {
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
                        "custodian {} ({}), held now by {}",
                        custodians_text(c),
                        c.last_status.join("/"),
                        if c.held_now_by.is_empty() {
                            "nobody".to_string()
                        } else {
                            c.held_now_by.join(", ")
                        }
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
