//! `tally audit`: list the audit trail, and verify its chain and signatures here.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::*;
use crate::proto;

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

pub async fn run(target: Target, command: AuditCommand) -> Result<()> {
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
                .map(tally_wire::audit::record_from_proto)
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
