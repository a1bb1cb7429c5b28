//! `tally node submit`'s policy: where a new snapshot's chain starts, and what
//! happens to pending snapshots the coordinator refuses.
//!
//! The CLI only prints; the decisions (never fork a chain the coordinator may
//! hold, never resend forever what can never be accepted) live here so that
//! every caller of a node makes them the same way.

use std::ops::RangeInclusive;

use super::{Node, NodeError};
use crate::snapshot::{Receipt, SnapshotDigest};
use crate::state::StateCode;

/// Why a submission stopped, with what was done about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error(
        "--new-chain: the coordinator already holds {state}'s chain up to sequence {sequence}, \
         and a new chain would fork it; nothing was signed. Run without --new-chain to continue it"
    )]
    NewChainWouldFork { state: StateCode, sequence: u64 },
    #[error(
        "this node's outbox is empty and the coordinator cannot be reached ({source}) to say \
         where {state}'s chain stands. Signing sequence 1 now would fork the chain if {state} \
         has submitted before (for example from a node that was reinstalled), so nothing was \
         signed. Retry when the coordinator is reachable, or pass --new-chain if {state} has \
         never submitted"
    )]
    ChainHeadUnknown { state: StateCode, source: NodeError },
    #[error(
        "{source}\nThe coordinator's chain ends before sequence {}: sequences {} to {}, signed \
         by this node and never acceptable, were removed from the outbox. Fix the node's \
         key_file, state or credentials as the message says, then submit the export again",
        removed.start(), removed.start(), removed.end()
    )]
    RefusedSigner {
        source: NodeError,
        removed: RangeInclusive<u64>,
    },
    #[error("{}", refused_content_message(source, removed))]
    RefusedContent {
        source: NodeError,
        removed: RangeInclusive<u64>,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Outbox(#[from] super::OutboxError),
}

fn refused_content_message(e: &NodeError, removed: &RangeInclusive<u64>) -> String {
    let first = *removed.start();
    if first == *removed.end() {
        return format!(
            "{e}\nThe coordinator stored nothing for sequence {first}; it was removed from the \
             outbox, so the next export submitted takes sequence {first}. Fix the export and \
             submit it again"
        );
    }
    let later = if first + 1 == *removed.end() {
        format!("sequence {}", removed.end())
    } else {
        format!("sequences {} to {}", first + 1, removed.end())
    };
    format!(
        "{e}\nThe coordinator stored nothing for sequence {first}, nor for {later}, signed after \
         it and chained on it, so never acceptable: all were removed from the outbox, and the \
         next export submitted takes sequence {first}. Fix that export, then submit again, in \
         order, the exports of {later} that still matter (the newest is usually enough)"
    )
}

/// The chain head a new export is signed after.
///
/// A node with an empty outbox continues the coordinator's chain for its
/// state (e.g. after a reinstall) rather than signing a conflicting first
/// sequence. Without the coordinator it cannot know whether such a chain
/// exists, so it waits for it (as for a submission) and signs nothing unless
/// told that this is a new chain (`new_chain`).
pub(crate) async fn chain_head_for_signing(
    node: &Node,
    new_chain: bool,
) -> Result<Option<(u64, SnapshotDigest)>, SubmitError> {
    let state = node.config().state;
    if node.outbox().last()?.is_some() {
        return Ok(node.chain_head_if_known().await);
    }
    match node.fetch_chain_head().await {
        Ok(Some((sequence, _))) if new_chain => {
            Err(SubmitError::NewChainWouldFork { state, sequence })
        }
        Ok(head) => Ok(head),
        Err(e) if e.is_retryable() && new_chain => {
            tracing::warn!(error = %e, "coordinator unreachable; starting {state}'s chain at sequence 1 (--new-chain)");
            Ok(None)
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(
                error = %e,
                "the outbox is empty: waiting for the coordinator to say where {state}'s chain stands (pass --new-chain if {state} has never submitted)"
            );
            match node.with_retry(|| node.fetch_chain_head()).await {
                Ok(head) => Ok(head),
                Err(source @ NodeError::GaveUp { .. }) => {
                    Err(SubmitError::ChainHeadUnknown { state, source })
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Delivers every pending snapshot and returns their receipts.
///
/// A pending snapshot that the coordinator refuses for good (its content, or
/// its signer once the coordinator confirms its chain ends before it) leaves
/// the outbox with every snapshot chained on it: left pending, it would be
/// resent first by every later submission and refused again, and the node
/// could never move on. The error says which sequences were removed.
pub(crate) async fn deliver_pending(node: &Node) -> Result<Vec<Receipt>, SubmitError> {
    match node.submit_pending().await {
        Ok(receipts) => Ok(receipts),
        Err(source) if source.is_refused_for_credentials() => {
            match node.discard_refused_signer(&source).await? {
                Some(removed) => Err(SubmitError::RefusedSigner { source, removed }),
                None => Err(source.into()),
            }
        }
        Err(source) => match node.discard_refused(&source)? {
            Some(removed) => Err(SubmitError::RefusedContent { source, removed }),
            None => Err(source.into()),
        },
    }
}
