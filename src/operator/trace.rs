//! `tally trace` (the custody trail of one item, and its evidence bundle)
//! and `tally verify` (checks a bundle offline).

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};

use crate::cli::*;
use crate::evidence::{self, BundleError, EntryError};
use crate::operator;
use crate::operator::trace_view::{TraceJson, render_table};
use crate::proto::{self, trace_client::TraceClient};
use crate::support::keys;

/// Largest trace response accepted: every entry carries its evidence (about
/// 1 KiB), so a long-lived item in many snapshots exceeds gRPC's 4 MiB default.
const MAX_TRACE_RESPONSE: usize = 256 << 20;

pub async fn trace(args: TraceArgs) -> Result<()> {
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

pub fn verify(args: VerifyArgs) -> Result<()> {
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
