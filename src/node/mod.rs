//! The member-state node: export → signed snapshot in the outbox → coordinator.
//!
//! Signing and sending are separate steps on purpose. [`Node::prepare`] turns an
//! export into a signed snapshot and makes it durable in the outbox;
//! [`Node::submit_pending`] delivers every pending snapshot in sequence order,
//! retrying while the coordinator is unreachable. A crash between the two
//! leaves a pending entry that the next run sends unchanged.
//!
//! # One export, one snapshot
//!
//! An export is its file's bytes at an as-of time: the time given
//! (`tally node submit --as-of-unix-ms`), else the file's modification
//! time, which is when the ministry's exporter wrote it (or when it was last
//! written or copied without keeping its time). [`Node::prepare`] signs an
//! export unless the outbox already holds a snapshot of the same bytes (by
//! SHA-256) as of that time or later, pending or accepted
//! ([`OutboxEntry::covers`]). So:
//! - the same file submitted again, unchanged (a retry after a crash, a
//!   cron job run twice, a file copied back into the drop folder with its
//!   time kept), is not signed twice, and neither is an old file submitted
//!   after newer ones: it would attest the items as of a time the chain
//!   already passed;
//! - a new export with the same items as the last one (the ministry's stock
//!   did not change: a new file, or the same one written again, or
//!   `--as-of-unix-ms` later) is signed as the next sequence with its later
//!   as-of time. It attests that nothing changed, and keeps the state from
//!   being reported overdue; the coordinator reconciles it at almost no
//!   cost, since no key changed.
//!
//! The file name plays no part, and neither do the items alone: two files
//! with different bytes (rows in another order, say) are two exports.

pub mod commands;
pub mod outbox;
pub mod submit;
pub mod watch;

use std::io::Read;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use crate::inventory_csv::{self, ExportError, ExportOptions};
use crate::proto::{self, snapshots_client::SnapshotsClient, submit_request};
use crate::snapshot::{Receipt, SnapshotDigest, build_snapshot, sort_items};
use crate::support::clock::system_now_unix_ms as now_unix_ms;
use crate::support::config::NodeConfig;
use crate::support::keys;
use crate::support::progress::Progress;
use tally_wire::convert::{receipt_from_proto, signed_header_to_proto, snapshot_info_from_proto};

pub use outbox::OutboxEntry;
pub use outbox::{Outbox, OutboxError};

/// Why a node operation failed. `retryable` errors are retried with backoff
/// by [`Node::submit_pending`]; the others need a person.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the coordinator at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error(
        "TLS with the coordinator at {address} failed: {message} (not retried: check the node's [tls] files, the coordinator's certificate and the https:// address)"
    )]
    Tls { address: String, message: String },
    /// The coordinator answered UNAVAILABLE itself (busy or shutting down),
    /// as opposed to a connection that failed ([`NodeError::Unreachable`]).
    #[error("the coordinator at {address} is unavailable: {message}")]
    Busy { address: String, message: String },
    #[error(
        "this outbox ends at sequence {outbox} but the coordinator holds {state}'s chain up to \
         sequence {coordinator} (an outbox restored from an older backup, or another node \
         signing for {state}?). Signing sequence {next} would fork the chain, so nothing was \
         signed. Restore the newest outbox, or move this one aside: with an empty outbox the \
         node continues from the coordinator's chain",
        next = outbox + 1
    )]
    OutboxBehind {
        state: crate::state::StateCode,
        outbox: u64,
        coordinator: u64,
    },
    #[error("the coordinator rejected sequence {sequence}: {code:?}: {message}")]
    Rejected {
        sequence: u64,
        code: Code,
        message: String,
    },
    #[error("the coordinator's receipt for sequence {sequence} is invalid: {reason}")]
    BadReceipt { sequence: u64, reason: String },
    #[error(transparent)]
    Endpoint(#[from] crate::support::tls::EndpointError),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: Box<NodeError> },
}

impl NodeError {
    /// Returns true if and only if trying again later may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            NodeError::Unreachable { .. } | NodeError::Busy { .. } => true,
            NodeError::Rejected { code, .. } => matches!(
                code,
                Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled
            ),
            _ => false,
        }
    }

    /// Returns true if and only if the coordinator refused the snapshot for
    /// who sent it: its signature is not the state's registered key, or the
    /// caller may not submit for that state. It stored nothing; the same
    /// export signed again once the node's key, state or credentials are
    /// fixed can succeed, but this signed snapshot never will.
    pub fn is_refused_for_credentials(&self) -> bool {
        matches!(
            self,
            NodeError::Rejected {
                code: Code::Unauthenticated | Code::PermissionDenied,
                ..
            }
        )
    }

    /// Returns true if and only if the coordinator refused the snapshot for
    /// its content (malformed, too big), so that it stored nothing and a
    /// different export may succeed where this one failed.
    pub(crate) fn is_refused_for_content(&self) -> bool {
        matches!(
            self,
            NodeError::Rejected {
                code: Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange,
                ..
            }
        )
    }
}

/// What a failed call means for the node. A status the coordinator sent has
/// no source; one tonic made from a transport failure carries that failure
/// as its source, whatever its code (h2's ENHANCE_YOUR_CALM, for one, comes
/// as RESOURCE_EXHAUSTED): only the coordinator's own answers can refuse a
/// snapshot for its content.
fn classify_status(address: &str, sequence: u64, status: &tonic::Status) -> NodeError {
    // With TLS 1.3 a refused client certificate only shows on the first
    // call, as a transport failure carrying the server's alert.
    if let Some(message) = crate::support::tls::tls_failure(status) {
        return NodeError::Tls {
            address: address.to_string(),
            message,
        };
    }
    let from_the_server = std::error::Error::source(status).is_none();
    match status.code() {
        Code::Unavailable if from_the_server => NodeError::Busy {
            address: address.to_string(),
            message: status.message().to_string(),
        },
        code if from_the_server && code != Code::Unknown => NodeError::Rejected {
            sequence,
            code,
            message: status.message().to_string(),
        },
        _ => NodeError::Unreachable {
            address: address.to_string(),
            message: status.message().to_string(),
        },
    }
}

/// An export file as read for signing: its bytes, their SHA-256, and its
/// modification time (the as-of time when none is given).
pub(crate) struct ExportFile {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: [u8; 32],
    pub(crate) modified_unix_ms: i64,
}

impl ExportFile {
    /// Reads `path` through one open handle, so that the bytes and the
    /// modification time are those of one file even if another is renamed
    /// over its name meanwhile.
    pub(crate) fn read(path: &Path) -> Result<ExportFile, NodeError> {
        let err = |source| NodeError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        let modified = file.metadata().and_then(|m| m.modified()).map_err(err)?;
        Ok(ExportFile {
            sha256: Sha256::digest(&bytes).into(),
            modified_unix_ms: unix_ms(modified),
            bytes,
        })
    }
}

/// `time` in milliseconds since the Unix epoch (negative before 1970).
fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// What [`Node::prepare`] did with an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Signed a new snapshot with this sequence number.
    Signed { sequence: u64, items: u64 },
    /// This export (its bytes, as of its time or earlier) was signed already,
    /// as this sequence, pending or accepted; nothing new signed.
    AlreadySigned { sequence: u64 },
}

/// A member-state node: its configuration, key and outbox.
pub struct Node {
    config: NodeConfig,
    key: SigningKey,
    outbox: Outbox,
    /// Whether to draw progress on stderr (when it is a terminal).
    progress: bool,
}

impl Node {
    /// Opens the node: its signing key, its TLS files (checked here, before
    /// anything is signed or the outbox is opened, rather than at the first
    /// connection: a private key that group or others can read is refused
    /// at start-up) and its outbox.
    pub fn open(config: NodeConfig) -> Result<Node, NodeError> {
        let key = keys::read_signing_key(&config.key_file)?;
        crate::support::tls::endpoint(&config.coordinator, config.tls.as_ref())?;
        let outbox = Outbox::open(&config.outbox_dir)?;
        Ok(Node {
            config,
            key,
            outbox,
            progress: false,
        })
    }

    /// Draws parse, sign and upload progress on stderr when it is a
    /// terminal (off by default: a library caller decides).
    pub(crate) fn show_progress(&mut self, show: bool) {
        self.progress = show;
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Parses, validates, orders, digests and signs `export`, storing the
    /// signed snapshot in the outbox before returning. `as_of_unix_ms`
    /// defaults to the file's modification time. Nothing is signed if the
    /// outbox already holds this export (see the module documentation):
    /// [`Prepared::AlreadySigned`]. `chain_head` is the coordinator's newest
    /// snapshot of this state, if known: with an empty outbox it continues
    /// that chain instead of starting a new one at sequence 1; with an outbox
    /// that ends before it, nothing is signed ([`NodeError::OutboxBehind`]).
    pub fn prepare(
        &self,
        export_path: &Path,
        as_of_unix_ms: Option<i64>,
        chain_head: Option<(u64, SnapshotDigest)>,
    ) -> Result<Prepared, NodeError> {
        let export = ExportFile::read(export_path)?;
        if as_of_unix_ms.is_none() && export.modified_unix_ms > now_unix_ms() + 60_000 {
            tracing::warn!(
                file = %export_path.display(),
                modified_unix_ms = export.modified_unix_ms,
                "the export's modification time is in the future (a clock out of step?): its snapshot is as of that time"
            );
        }
        let as_of_unix_ms = as_of_unix_ms.unwrap_or(export.modified_unix_ms);
        if let Some(entry) = self.outbox.find_export(&export.sha256, as_of_unix_ms)? {
            return Ok(Prepared::AlreadySigned {
                sequence: entry.sequence(),
            });
        }
        let bytes = export.bytes;
        let opts = ExportOptions {
            rule: &self.config.canonical,
            known_states: &self.config.known_states,
            max_problems: 100,
        };
        let name = export_path.display().to_string();
        let parsing = Progress::bytes(self.progress, bytes.len() as u64, format!("parsing {name}"));
        let mut items =
            inventory_csv::read_export(&name, parsing.wrap_read(bytes.as_slice()), &opts)?;
        parsing.finish();
        let signing = Progress::spinner(
            self.progress,
            format!("sorting, digesting and signing {} items", items.len()),
        );
        sort_items(&mut items);
        let (sequence, previous) = match (self.outbox.last()?, chain_head) {
            (Some(last), Some((head, _))) if head > last.sequence() => {
                return Err(NodeError::OutboxBehind {
                    state: self.config.state,
                    outbox: last.sequence(),
                    coordinator: head,
                });
            }
            (Some(last), _) => (last.sequence() + 1, last.digest()),
            (None, Some((seq, digest))) => (seq + 1, digest),
            (None, None) => (1, SnapshotDigest::GENESIS),
        };
        let unsigned = build_snapshot(self.config.state, sequence, as_of_unix_ms, previous, &items);
        let signed = unsigned.header.sign(&self.key);
        signing.set_message(format!("storing sequence {sequence} in the outbox"));
        self.outbox
            .store_signed(&signed, &unsigned.chunks, export.sha256)?;
        signing.finish();
        Ok(Prepared::Signed {
            sequence,
            items: items.len() as u64,
        })
    }

    /// Delivers every pending snapshot in order, retrying retryable failures
    /// with exponential backoff. Returns the receipts it obtained.
    pub async fn submit_pending(&self) -> Result<Vec<Receipt>, NodeError> {
        let mut receipts = Vec::new();
        for entry in self.outbox.pending()? {
            let receipt = self.with_retry(|| self.submit_once(&entry)).await?;
            self.outbox.mark_accepted(&entry, &receipt)?;
            tracing::info!(sequence = entry.sequence(), digest = %receipt.digest, "accepted");
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    /// [`Node::fetch_chain_head`] tried once, for a node whose outbox is not
    /// empty: lets [`Node::prepare`] notice an outbox behind the coordinator.
    /// `None` if the coordinator cannot say now; the outbox then decides.
    pub(crate) async fn chain_head_if_known(&self) -> Option<(u64, SnapshotDigest)> {
        match self.fetch_chain_head().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "could not compare the outbox with the coordinator's chain");
                None
            }
        }
    }

    /// Asks the coordinator for this state's newest accepted snapshot, and
    /// returns it if and only if it carries this node's own valid signature.
    pub async fn fetch_chain_head(&self) -> Result<Option<(u64, SnapshotDigest)>, NodeError> {
        let mut client = self.connect().await?;
        let state = self.config.state.to_string();
        let list = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state: state.clone(),
                from_sequence: 0,
                limit: 1,
            })
            .await
            .map_err(|s| self.status_error(0, s))?
            .into_inner();
        if list.latest_sequence == 0 {
            return Ok(None);
        }
        let head = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state,
                from_sequence: list.latest_sequence,
                limit: 1,
            })
            .await
            .map_err(|s| self.status_error(0, s))?
            .into_inner();
        let info = head
            .snapshots
            .first()
            .ok_or_else(|| NodeError::BadReceipt {
                sequence: list.latest_sequence,
                reason: "the coordinator listed a head it did not return".into(),
            })?;
        let (signed, _) =
            snapshot_info_from_proto(info).map_err(|reason| NodeError::BadReceipt {
                sequence: list.latest_sequence,
                reason,
            })?;
        if signed.header.state != self.config.state
            || signed.verify(&self.key.verifying_key()).is_err()
        {
            return Err(NodeError::BadReceipt {
                sequence: list.latest_sequence,
                reason: "the coordinator's chain head is not signed by this node's key".into(),
            });
        }
        Ok(Some((signed.header.sequence, signed.digest())))
    }

    /// After [`Node::submit_pending`] failed with `error`: if the coordinator
    /// refused a pending snapshot for its content, removes it from the outbox
    /// with every later pending one (they chain on it, so they could never be
    /// accepted) and returns the sequences removed; the next export then
    /// takes the first of them. The coordinator stored nothing for any of
    /// them, so this is not an equivocation. `None` (nothing removed) for any
    /// other error.
    pub fn discard_refused(
        &self,
        error: &NodeError,
    ) -> Result<Option<RangeInclusive<u64>>, NodeError> {
        match error {
            NodeError::Rejected { sequence, .. } if error.is_refused_for_content() => {
                self.discard_from(*sequence, error)
            }
            _ => Ok(None),
        }
    }

    /// After [`Node::submit_pending`] failed with `error`: if the coordinator
    /// refused a pending snapshot for its signer (wrong key, state or
    /// credentials), removes it and every later pending one as
    /// [`Node::discard_refused`] does, so that a node whose key is fixed signs
    /// its exports again instead of resending, forever, what can never be
    /// accepted. Only once the coordinator confirms that its chain ends
    /// before that sequence: those refusals come before its check for a
    /// resubmission, so a snapshot whose receipt was lost may be stored
    /// although still pending here, and signing its sequence again would be an
    /// equivocation. `None` (nothing removed) otherwise, also when the
    /// coordinator cannot be asked.
    pub async fn discard_refused_signer(
        &self,
        error: &NodeError,
    ) -> Result<Option<RangeInclusive<u64>>, NodeError> {
        let NodeError::Rejected { sequence, .. } = error else {
            return Ok(None);
        };
        if !error.is_refused_for_credentials() {
            return Ok(None);
        }
        match self.coordinator_latest_sequence().await {
            Ok(latest) if latest < *sequence => self.discard_from(*sequence, error),
            Ok(latest) => {
                tracing::warn!(
                    sequence,
                    latest,
                    "the coordinator's chain already reaches this sequence: kept in the outbox"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not ask the coordinator where its chain ends: kept in the outbox");
                Ok(None)
            }
        }
    }

    fn discard_from(
        &self,
        sequence: u64,
        error: &NodeError,
    ) -> Result<Option<RangeInclusive<u64>>, NodeError> {
        let removed = self.outbox.discard_refused(sequence)?;
        let (Some(&first), Some(&last)) = (removed.first(), removed.last()) else {
            return Ok(None);
        };
        tracing::warn!(first, last, %error, "refused snapshot removed from the outbox, with the ones chained on it");
        Ok(Some(first..=last))
    }

    /// The sequence of this state's newest snapshot at the coordinator (0:
    /// none), unverified: enough to know whether a sequence is taken.
    async fn coordinator_latest_sequence(&self) -> Result<u64, NodeError> {
        let mut client = self.connect().await?;
        let list = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state: self.config.state.to_string(),
                from_sequence: 0,
                limit: 1,
            })
            .await
            .map_err(|s| self.status_error(0, s))?
            .into_inner();
        Ok(list.latest_sequence)
    }

    /// Runs `op` until it succeeds, a non-retryable error occurs, or the
    /// retry policy gives up.
    pub(crate) async fn with_retry<T, F, Fut>(&self, mut op: F) -> Result<T, NodeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let policy = &self.config.retry;
        let mut delay = Duration::from_millis(policy.initial_backoff_ms.max(1));
        let max = Duration::from_millis(policy.max_backoff_ms.max(policy.initial_backoff_ms));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    if policy.max_attempts != 0 && attempts >= policy.max_attempts {
                        return Err(NodeError::GaveUp {
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "will retry");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<SnapshotsClient<Channel>, NodeError> {
        let endpoint =
            crate::support::tls::endpoint(&self.config.coordinator, self.config.tls.as_ref())?;
        let channel = endpoint.connect().await.map_err(|e| {
            let address = self.config.coordinator.clone();
            match crate::support::tls::tls_failure(&e) {
                Some(message) => NodeError::Tls { address, message },
                None => NodeError::Unreachable {
                    address,
                    message: crate::support::tls::error_chain(&e),
                },
            }
        })?;
        Ok(SnapshotsClient::new(channel))
    }

    fn status_error(&self, sequence: u64, status: tonic::Status) -> NodeError {
        classify_status(&self.config.coordinator, sequence, &status)
    }

    async fn submit_once(&self, entry: &OutboxEntry) -> Result<Receipt, NodeError> {
        let mut client = self.connect().await?;
        let sequence = entry.sequence();
        let (tx, rx) = mpsc::channel(4);
        let header = proto::SubmitRequest {
            part: Some(submit_request::Part::Header(signed_header_to_proto(
                &entry.signed,
            ))),
        };
        // Chunks are read from the outbox as they are sent, so a large snapshot
        // is never held in memory whole.
        let outbox_db = self.outbox.chunk_reader();
        let chunk_count = entry.chunk_count;
        let uploading = Progress::steps(
            self.progress,
            u64::from(chunk_count),
            "chunks",
            format!(
                "uploading sequence {sequence} ({} items)",
                entry.signed.header.item_count
            ),
        );
        let sent = uploading.clone();
        // Set before the stream ends short, so before the coordinator's answer.
        let unreadable = std::sync::Arc::new(std::sync::Mutex::new(None));
        let unreadable_in_sender = unreadable.clone();
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(header).is_err() {
                return;
            }
            for i in 0..chunk_count {
                let leaves = match outbox_db.chunk(sequence, i) {
                    Ok(leaves) => leaves,
                    Err(e) => {
                        // Ending the stream short makes the coordinator refuse
                        // the snapshot (nothing stored); that refusal is about
                        // this outbox, not about the snapshot's content.
                        tracing::error!(sequence, chunk = i, error = %e, "reading the outbox failed");
                        if let Ok(mut slot) = unreadable_in_sender.lock() {
                            *slot = Some(e);
                        }
                        return;
                    }
                };
                let msg = proto::SubmitRequest {
                    part: Some(submit_request::Part::Chunk(proto::ItemChunk {
                        leaves: leaves.into(),
                    })),
                };
                if tx.blocking_send(msg).is_err() {
                    return;
                }
                sent.inc(1);
            }
        });
        let response =
            client.submit(ReceiverStream::new(rx)).await.map_err(|s| {
                match unreadable.lock().ok().and_then(|mut slot| slot.take()) {
                    Some(e) => NodeError::Outbox(e),
                    None => self.status_error(sequence, s),
                }
            })?;
        uploading.finish();
        let receipt =
            receipt_from_proto(response.get_ref()).map_err(|e| NodeError::BadReceipt {
                sequence,
                reason: e.to_string(),
            })?;
        self.check_receipt(entry, &receipt)?;
        Ok(receipt)
    }

    fn check_receipt(&self, entry: &OutboxEntry, receipt: &Receipt) -> Result<(), NodeError> {
        let bad = |reason: &str| NodeError::BadReceipt {
            sequence: entry.sequence(),
            reason: reason.to_string(),
        };
        if receipt.digest != entry.digest()
            || receipt.sequence != entry.sequence()
            || receipt.state != self.config.state
        {
            return Err(bad("it names a different snapshot"));
        }
        match &self.config.coordinator_public_key {
            Some(key) if !receipt.verify(key) => {
                Err(bad("the coordinator signature does not verify"))
            }
            Some(_) => Ok(()),
            None => {
                tracing::warn!(
                    "coordinator_public_key_file is not set: receipt signature not checked"
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_transport(mut status: tonic::Status) -> tonic::Status {
        status.set_source(std::sync::Arc::new(std::io::Error::other("h2 went away")));
        status
    }

    #[test]
    fn only_the_coordinators_own_answers_refuse_a_snapshot() {
        let classify = |s: tonic::Status| classify_status("https://c:50051", 7, &s);
        let busy = classify(tonic::Status::unavailable("busy verifying 8 uploads"));
        assert!(matches!(busy, NodeError::Busy { .. }), "{busy:?}");
        assert!(busy.is_retryable() && !busy.is_refused_for_content());

        let too_big = classify(tonic::Status::resource_exhausted("declares 6 items"));
        assert!(
            matches!(too_big, NodeError::Rejected { sequence: 7, .. }),
            "{too_big:?}"
        );
        assert!(too_big.is_refused_for_content() && !too_big.is_retryable());

        // The same codes made from a transport failure: retried, never
        // taken as a refusal.
        for status in [
            tonic::Status::resource_exhausted("h2 protocol error: ENHANCE_YOUR_CALM"),
            tonic::Status::unavailable("connection reset"),
            tonic::Status::invalid_argument("h2 protocol error"),
        ] {
            let e = classify(from_transport(status));
            assert!(matches!(e, NodeError::Unreachable { .. }), "{e:?}");
            assert!(e.is_retryable() && !e.is_refused_for_content());
        }
        let unknown = classify(tonic::Status::unknown("handler panicked"));
        assert!(matches!(unknown, NodeError::Unreachable { .. }));
    }
}
