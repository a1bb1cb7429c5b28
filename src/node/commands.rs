//! The node's commands: `tally node submit`, `tally node status` and
//! `tally node watch`. They print; the policy is in [`super::submit`].

use std::path::PathBuf;

use anyhow::Result;

use crate::node::{Node, Prepared};
use crate::support::config::NodeConfig;
use crate::support::signals::shutdown_signal;

pub async fn submit(
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
    let prepared = node.prepare(&export, as_of, head)?;
    let (Prepared::Signed { sequence, .. } | Prepared::AlreadySigned { sequence }) = prepared;
    let as_of = match node.outbox().entry(sequence)? {
        Some(entry) => entry.signed.header.as_of_unix_ms.to_string(),
        None => "?".to_string(),
    };
    match prepared {
        Prepared::Signed { sequence, items } => {
            println!(
                "signed {} as sequence {sequence} ({items} items) as of {as_of} (unix ms), stored in the outbox",
                export.display()
            );
        }
        Prepared::AlreadySigned { sequence } => {
            println!(
                "{} was already signed as sequence {sequence} (as of {as_of} unix ms); not signing \
                 it again (a new export of the same items needs a later modification time or \
                 --as-of-unix-ms)",
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

pub fn status(config: PathBuf) -> Result<()> {
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

pub async fn watch(config: PathBuf, dir: PathBuf) -> Result<()> {
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
