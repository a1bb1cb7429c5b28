//! `tally.v1.Snapshots`: submission and read-back of signed snapshots.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::audit::audited;
use super::caller_of;
use super::request::EdgeRefusal;
use super::status::{self, EdgeFailure};
use crate::access::{Principal, check_own_state};
use crate::audit::Action;
use crate::coordinator::admission::{Admission, Committed, IngestError, Ingestor, Upload};
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::metrics::{Metrics, ReconcileTrigger};
use crate::coordinator::ops::RequestError;
use crate::coordinator::reconciler::Reconciler;
use crate::coordinator::storage::audit_log::AuditStore;
use crate::proto::{self, get_snapshot_response, submit_request};
use crate::state::StateCode;
use crate::support::config::Limits;
use tally_wire::convert::{receipt_to_proto, signed_header_from_proto, snapshot_info_to_proto};

/// Chunks buffered between the network reader and the verifier. Small and
/// bounded: it lets decoding of chunk n+1 overlap verification of chunk n
/// without letting a fast client queue unbounded memory.
const VERIFY_QUEUE: usize = 4;
/// Default and maximum page size of `ListSnapshots`.
const LIST_LIMIT: usize = 1000;

pub struct SnapshotsService {
    ingestor: Ingestor,
    reconciler: Arc<Reconciler>,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    /// One permit per upload being verified (limits.max_concurrent_uploads).
    uploads: Arc<Semaphore>,
    /// Every rejected submission is recorded here.
    audit: Arc<dyn AuditStore>,
}

impl SnapshotsService {
    pub fn new(
        ingestor: Ingestor,
        reconciler: Arc<Reconciler>,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
        audit: Arc<dyn AuditStore>,
    ) -> SnapshotsService {
        let uploads = Arc::new(Semaphore::new(ingestor.limits().max_concurrent_uploads));
        SnapshotsService {
            ingestor,
            reconciler,
            lifecycle,
            metrics,
            uploads,
            audit,
        }
    }
}

/// What a submission's header claimed, as far as it arrived: recorded in
/// the audit trail if the submission is rejected.
#[derive(Debug, Default)]
struct Claim {
    state: Option<String>,
    sequence: Option<u64>,
}

/// What a successful submission did.
enum Submitted {
    /// A new snapshot of `items` items is stored.
    New { receipt: proto::Receipt, items: u64 },
    /// The exact snapshot was already stored: its original receipt.
    Resubmitted(proto::Receipt),
}

/// Runs `f` on a blocking thread inside the current (RPC) span.
fn blocking_in_span<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

fn parse_state(s: &str) -> Result<StateCode, RequestError> {
    Ok(StateCode::parse(s)?)
}

/// Verifies and stores chunks on a blocking thread, off the async runtime.
/// Ends with the upload when the reader sends `None` (end of stream); if the
/// reader goes away without it (client hung up), the upload is dropped and
/// everything it stored is discarded.
fn spawn_verifier(
    mut upload: Box<Upload>,
    mut chunks: mpsc::Receiver<Option<Bytes>>,
) -> tokio::task::JoinHandle<Result<Option<Box<Upload>>, IngestError>> {
    blocking_in_span(move || {
        while let Some(msg) = chunks.blocking_recv() {
            match msg {
                Some(leaves) => upload.push_chunk(&leaves)?,
                None => return Ok(Some(upload)),
            }
        }
        Ok(None)
    })
}

/// One submission: header, admission, items, commit.
async fn submit(
    ingestor: Ingestor,
    principal: Option<Principal>,
    mut stream: Streaming<proto::SubmitRequest>,
    claim: &mut Claim,
) -> Result<Submitted, Status> {
    let limits = ingestor.limits().clone();
    let header = match next_message(&mut stream, &limits).await? {
        Some(proto::SubmitRequest {
            part: Some(submit_request::Part::Header(h)),
        }) => {
            claim.state = Some(h.state.clone());
            claim.sequence = Some(h.sequence);
            h
        }
        Some(proto::SubmitRequest {
            part: Some(submit_request::Part::Chunk(_)),
        }) => return Err(EdgeRefusal::FirstMessageIsChunk.into()),
        Some(proto::SubmitRequest { part: None }) => {
            return Err(EdgeRefusal::FirstMessageEmpty.into());
        }
        None => return Err(EdgeRefusal::NoHeader.into()),
    };
    let signed = signed_header_from_proto(&header).map_err(status::malformed)?;
    let items = signed.header.item_count;
    let span = tracing::Span::current();
    span.record("state", signed.header.state.as_str());
    span.record("sequence", signed.header.sequence);
    span.record("items", items);
    // The TLS identity must match the signed header before any item is read:
    // a node submits for its own state only, whatever keys it holds.
    check_own_state(principal.as_ref(), signed.header.state).map_err(status::access)?;

    let admit = ingestor.clone();
    let upload = match join(blocking_in_span(move || admit.admit(signed))).await?? {
        Admission::AlreadyAccepted(receipt) => {
            tracing::info!("resubmission of an accepted snapshot: original receipt returned");
            return Ok(Submitted::Resubmitted(receipt_to_proto(&receipt)));
        }
        Admission::New(upload) => upload,
    };

    let (tx, rx) = mpsc::channel(VERIFY_QUEUE);
    let verifier = spawn_verifier(upload, rx);
    let read_result: Result<(), Status> = async {
        while let Some(msg) = next_message(&mut stream, &limits).await? {
            match msg.part {
                Some(submit_request::Part::Chunk(chunk)) => {
                    if tx.send(Some(chunk.leaves)).await.is_err() {
                        // The verifier stopped on an error; it is reported below.
                        return Ok(());
                    }
                }
                Some(submit_request::Part::Header(_)) => {
                    return Err(EdgeRefusal::SecondHeader.into());
                }
                None => return Err(EdgeRefusal::EmptyChunk.into()),
            }
        }
        let _ = tx.send(None).await;
        Ok(())
    }
    .await;
    drop(tx);
    let verified = join(verifier).await?;
    // A verification error explains more than the read error it caused.
    let upload = match (verified, read_result) {
        (Err(e), _) => return Err(e.into()),
        (Ok(_), Err(status)) => return Err(status),
        (Ok(Some(upload)), Ok(())) => upload,
        (Ok(None), Ok(())) => return Err(EdgeRefusal::UploadEndedEarly.into()),
    };
    match join(blocking_in_span(move || upload.finish())).await?? {
        Committed::New(receipt) => Ok(Submitted::New {
            receipt: receipt_to_proto(&receipt),
            items,
        }),
        Committed::AlreadyAccepted(receipt) => {
            tracing::info!(
                "the same snapshot was committed by another upload meanwhile: its receipt returned"
            );
            Ok(Submitted::Resubmitted(receipt_to_proto(&receipt)))
        }
    }
}

/// Reads the next message, turning tonic's "message too large" (OUT_OF_RANGE)
/// into RESOURCE_EXHAUSTED with the configured limit named.
async fn next_message(
    stream: &mut Streaming<proto::SubmitRequest>,
    limits: &Limits,
) -> Result<Option<proto::SubmitRequest>, Status> {
    let limit = limits.max_message_bytes;
    let idle = std::time::Duration::from_secs(limits.upload_idle_timeout_seconds);
    let next = tokio::time::timeout(idle, stream.message())
        .await
        .map_err(|_| EdgeRefusal::UploadIdle {
            seconds: idle.as_secs(),
        })?;
    // tonic's own status for a message it refused to decode, or the
    // transport's: passed on, apart from the size limit.
    next.map_err(|s| {
        if s.code() == tonic::Code::OutOfRange {
            EdgeRefusal::MessageTooLarge {
                limit,
                detail: s.message().to_string(),
            }
            .into()
        } else {
            s
        }
    })
}

async fn join<T>(h: tokio::task::JoinHandle<T>) -> Result<T, EdgeFailure> {
    h.await.map_err(|source| EdgeFailure::Task {
        what: "ingest task",
        source,
    })
}

impl SnapshotsService {
    /// A submission from start to answer, without the audit record.
    async fn submit_unaudited(
        &self,
        request: Request<Streaming<proto::SubmitRequest>>,
        claim: &mut Claim,
    ) -> Result<Response<proto::Receipt>, Status> {
        let started = Instant::now();
        let _in_flight_gauge = self.metrics.submission_started();
        let principal = request.extensions().get::<Principal>().cloned();
        // Load shedding: past the limit, refuse at once rather than queue
        // work (and memory) the coordinator cannot keep up with. UNAVAILABLE,
        // not RESOURCE_EXHAUSTED: that code means "this snapshot is too big"
        // here, while a busy coordinator is transient and every gRPC client
        // treats UNAVAILABLE as "retry with backoff".
        let Ok(_permit) = self.uploads.clone().try_acquire_owned() else {
            let limit = self.ingestor.limits().max_concurrent_uploads;
            tracing::warn!(limit, "submission refused: too many uploads in progress");
            let status = Status::from(EdgeRefusal::Busy { limit });
            self.metrics.snapshot_rejected(status.code());
            return Err(status);
        };
        let result = submit(
            self.ingestor.clone(),
            principal,
            request.into_inner(),
            claim,
        )
        .await;
        let receipt = match result {
            Ok(Submitted::Resubmitted(receipt)) => {
                self.metrics.snapshot_resubmitted();
                receipt
            }
            Ok(Submitted::New { receipt, items }) => {
                self.metrics.snapshot_accepted(items, started.elapsed());
                // The snapshot is durably accepted; reconcile it before
                // answering, so alerts are current when the submitter gets its
                // receipt. A failure here does not undo the acceptance: the
                // next catch-up (next submission, or start-up) reconciles it.
                let reconciler = self.reconciler.clone();
                let now = self.ingestor.clock().now_unix_ms();
                let reconcile_started = Instant::now();
                match blocking_in_span(move || reconciler.catch_up(now)).await {
                    Ok(Ok(events)) => {
                        let elapsed = reconcile_started.elapsed();
                        self.metrics
                            .reconciled(ReconcileTrigger::Submission, elapsed);
                        tracing::info!(
                            alert_changes = events.len(),
                            elapsed_ms = elapsed.as_millis() as u64,
                            "reconciled"
                        );
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reconciliation failed; will retry on the next catch-up")
                    }
                    Err(e) => tracing::error!(error = %e, "reconciliation task failed"),
                }
                tracing::info!(
                    digest = %hex::encode(&receipt.snapshot_digest),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot accepted"
                );
                receipt
            }
            Err(status) => {
                self.metrics.snapshot_rejected(status.code());
                tracing::warn!(code = ?status.code(), error = %status.message(), "submission rejected; nothing stored");
                // A conflict or a fork was recorded as an equivocation
                // (docs/protocol.md §5.1): raise its `conflicting_submission`
                // alert now, not when the next snapshot is accepted.
                if matches!(
                    status.code(),
                    tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition
                ) {
                    let reconciler = self.reconciler.clone();
                    let now = self.ingestor.clock().now_unix_ms();
                    match blocking_in_span(move || reconciler.catch_up(now)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "reconciliation failed; will retry on the next catch-up")
                        }
                        Err(e) => tracing::error!(error = %e, "reconciliation task failed"),
                    }
                }
                return Err(status);
            }
        };
        Ok(Response::new(receipt))
    }
}

#[tonic::async_trait]
impl proto::snapshots_server::Snapshots for SnapshotsService {
    async fn submit(
        &self,
        request: Request<Streaming<proto::SubmitRequest>>,
    ) -> Result<Response<proto::Receipt>, Status> {
        let caller = caller_of(&request);
        let mut claim = Claim::default();
        // Held until the answer is ready and audited, so shutdown waits for
        // this submission (and its reconciliation) within its grace period.
        let in_flight = self.lifecycle.begin_submission();
        let result = match in_flight {
            Some(_) => self.submit_unaudited(request, &mut claim).await,
            None => {
                tracing::warn!("submission refused: the coordinator is shutting down");
                let status = Status::from(EdgeRefusal::ShuttingDown);
                self.metrics.snapshot_rejected(status.code());
                Err(status)
            }
        };
        if result.is_ok() {
            // Accepted snapshots are their own record (stored, with receipts).
            return result;
        }
        let action = Action::submit(claim.state.as_deref(), claim.sequence);
        audited(&self.audit, self.ingestor.clock(), caller, action, result).await
    }

    async fn list_snapshots(
        &self,
        request: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let req = request.into_inner();
        let state = parse_state(&req.state)?;
        tracing::Span::current().record("state", state.as_str());
        check_own_state(principal.as_ref(), state).map_err(status::access)?;
        let limit = match req.limit as usize {
            0 => LIST_LIMIT,
            n => n.min(LIST_LIMIT),
        };
        let store = self.ingestor.store();
        let snapshots = store.list(state, req.from_sequence.max(1), limit)?;
        let latest_sequence = store.latest(state)?.map_or(0, |s| s.signed.header.sequence);
        Ok(Response::new(proto::ListSnapshotsResponse {
            snapshots: snapshots.iter().map(stored_snapshot_info).collect(),
            latest_sequence,
        }))
    }

    type GetSnapshotStream =
        Pin<Box<dyn Stream<Item = Result<proto::GetSnapshotResponse, Status>> + Send>>;

    async fn get_snapshot(
        &self,
        request: Request<proto::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let req = request.into_inner();
        let state = parse_state(&req.state)?;
        let span = tracing::Span::current();
        span.record("state", state.as_str());
        span.record("sequence", req.sequence);
        check_own_state(principal.as_ref(), state).map_err(status::access)?;
        let store = self.ingestor.store().clone();
        let snapshot = store
            .get(state, req.sequence)?
            .ok_or(RequestError::NoSnapshot {
                state,
                sequence: req.sequence,
            })?;
        let info = proto::GetSnapshotResponse {
            part: Some(get_snapshot_response::Part::Info(stored_snapshot_info(
                &snapshot,
            ))),
        };
        // One chunk read at a time, on a blocking thread only while it
        // reads: a client that stops reading holds a suspended stream, not a
        // thread of the blocking pool (which uploads and commits need).
        let snapshot = Arc::new(snapshot);
        // The stream is polled after this handler returned, outside its
        // span: each read enters it again.
        let chunks = futures::stream::unfold(0u32, move |index| {
            let (store, snapshot, span) = (store.clone(), snapshot.clone(), span.clone());
            async move {
                if index >= snapshot.chunk_count {
                    return None;
                }
                let read = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| store.chunk(&snapshot, index))
                })
                .await;
                let message = match read {
                    Ok(Ok(leaves)) => Ok(proto::GetSnapshotResponse {
                        part: Some(get_snapshot_response::Part::Chunk(proto::ItemChunk {
                            leaves: leaves.into(),
                        })),
                    }),
                    Ok(Err(e)) => Err(e.into()),
                    Err(source) => Err(EdgeFailure::Task {
                        what: "snapshot reader",
                        source,
                    }
                    .into()),
                };
                // After an error the stream ends with it.
                let next = if message.is_ok() { index + 1 } else { u32::MAX };
                Some((message, next))
            }
        });
        let stream = futures::stream::once(std::future::ready(Ok(info))).chain(chunks);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_coordinator_info(
        &self,
        _request: Request<proto::GetCoordinatorInfoRequest>,
    ) -> Result<Response<proto::CoordinatorInfo>, Status> {
        let mut states: Vec<String> = self.ingestor.members().map(|s| s.to_string()).collect();
        states.sort();
        Ok(Response::new(proto::CoordinatorInfo {
            public_key: self.ingestor.public_key().to_bytes().to_vec().into(),
            states,
        }))
    }
}

fn stored_snapshot_info(s: &crate::coordinator::storage::StoredSnapshot) -> proto::SnapshotInfo {
    snapshot_info_to_proto(&s.signed, &s.digest, &s.receipt)
}
