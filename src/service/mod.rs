//! The gRPC edge: decode protobuf into validated domain types, call the
//! domain, encode the answer. Generated types stop here; errors are mapped to
//! `tonic::Status` once, in [`status`].

pub mod access;
pub mod alerts;
pub mod audit;
pub mod convert;
pub mod operations;
pub mod snapshots;
pub mod status;
pub mod trace;

/// Runs storage work (sled reads, flushes) off the async runtime, inside the
/// RPC's span, and maps a failed task to `INTERNAL`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| tonic::Status::internal(format!("task failed: {e}")))?
}
