//! `tally status`: the coordinator's member states and alert counts.

use anyhow::Result;
use serde_json::json;

use super::*;
use crate::proto;

pub async fn run(target: Target, format: Format) -> Result<()> {
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
