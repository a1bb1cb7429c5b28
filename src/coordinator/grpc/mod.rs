//! The gRPC edge: decode protobuf into domain types, call the domain (for
//! operator operations, one function of `coordinator::ops` each), encode the
//! answer with `tally_wire`. Generated types stop here; errors are mapped to
//! `tonic::Status` once, in [`status`] (what the edge itself refuses is a
//! [`request::EdgeRefusal`]). [`router`] puts the services together.

use std::sync::Arc;

use tonic::Request;
use tonic::transport::server::Router;
use tower_layer::{Identity, Stack};

use self::access::AccessLayer;
use self::alerts::AlertsService;
use self::audit::AuditService;
use self::operations::{CoordinatorService, SeizuresService};
use self::snapshots::SnapshotsService;
use self::trace::TraceService;
use crate::access::{AccessPolicy, Principal};
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::ops::{Caller, Deps, Ops};
use crate::coordinator::server::Coordinator;
use crate::proto::alerts_server::AlertsServer;
use crate::proto::audit_server::AuditServer;
use crate::proto::coordinator_server::CoordinatorServer;
use crate::proto::seizures_server::SeizuresServer;
use crate::proto::snapshots_server::SnapshotsServer;
use crate::proto::trace_server::TraceServer;

pub mod access;
pub mod alerts;
pub mod audit;
pub mod operations;
pub mod request;
pub mod snapshots;
pub mod status;
pub mod trace;

/// Encoded size after which a page of records ends, however many were
/// asked for: well inside a client's default 4 MiB message limit. Records
/// carry caller-supplied text (notes, refused RPC paths), so a count alone
/// does not bound a page.
const PAGE_BYTES: usize = 1 << 20;

/// The longest prefix of `messages` that encodes within [`PAGE_BYTES`]
/// (always the first, whatever its size), and whether any were left out.
fn within_page_bytes<M: prost::Message>(messages: impl IntoIterator<Item = M>) -> (Vec<M>, bool) {
    let mut page = Vec::new();
    let mut bytes = 0usize;
    for message in messages {
        bytes += message.encoded_len();
        if bytes > PAGE_BYTES && !page.is_empty() {
            return (page, true);
        }
        page.push(message);
    }
    (page, false)
}

/// Runs storage work (sled reads, flushes) off the async runtime, inside the
/// RPC's span, and maps a failed task to `INTERNAL`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    blocking_as("task", f).await
}

/// [`blocking`], naming the task `what` if it fails.
async fn blocking_as<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|source| status::EdgeFailure::Task { what, source })?
}

/// Runs an operator action, with its audit record, as a task of its own and
/// waits for it. tonic drops a handler's future when the client hangs up or
/// its `grpc-timeout` passes; the storage work already handed to a blocking
/// thread would still finish, and an action that took effect must not go
/// unrecorded. A spawned task runs to its end whoever stops waiting for it.
async fn run_detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, tonic::Status>> + Send + 'static,
) -> Result<T, tonic::Status> {
    use tracing::Instrument;
    tokio::spawn(work.in_current_span())
        .await
        .map_err(|source| status::EdgeFailure::Task {
            what: "task",
            source,
        })?
}

/// Who made a request and from where: the principal the access layer
/// attached to it (none if it did not pass the layer), and the peer.
pub(crate) fn caller_of<T>(request: &Request<T>) -> Caller {
    Caller {
        principal: request.extensions().get::<Principal>().cloned(),
        peer: request.remote_addr(),
    }
}

/// The coordinator's gRPC services on `builder`, behind the access layer of
/// `policy` (which records refused calls in the coordinator's audit trail):
/// health (reporting `Snapshots` as serving), reflection, and every
/// `tally.v1` service, the operator ones on one [`Ops`]. Returns the router
/// to serve and the health reporter, which shutdown turns to NOT_SERVING.
pub(crate) async fn router(
    builder: tonic::transport::Server,
    coordinator: &Coordinator,
    lifecycle: &Lifecycle,
    policy: AccessPolicy,
) -> Result<
    (
        Router<Stack<AccessLayer, Identity>>,
        tonic_health::server::HealthReporter,
    ),
    tonic_reflection::server::Error,
> {
    let max_message = coordinator.ingestor.limits().max_message_bytes;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SnapshotsServer<SnapshotsService>>()
        .await;
    // Both versions of reflection: `v1`, and `v1alpha` for the stock
    // clients that speak only that (grpcio-reflection, older grpcurl).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let snapshots = SnapshotsServer::new(SnapshotsService::new(
        coordinator.ingestor.clone(),
        coordinator.reconciler.clone(),
        lifecycle.clone(),
        coordinator.metrics.clone(),
        coordinator.audit.clone(),
    ))
    .max_decoding_message_size(max_message);
    let ops = Arc::new(Ops::new(Deps {
        policy: Arc::new(policy.clone()),
        ingestor: coordinator.ingestor.clone(),
        reconciler: coordinator.reconciler.clone(),
        audit: coordinator.audit.clone(),
        lifecycle: lifecycle.clone(),
        metrics: coordinator.metrics.clone(),
        clock: coordinator.clock.clone(),
        rule: coordinator.rule.clone(),
        code_of: status::ops_outcome_code,
    }));
    let access = AccessLayer::new(policy)
        .recording_to(coordinator.audit.clone())
        .timed_by(coordinator.clock.clone());
    let router = builder
        .layer(access)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(snapshots)
        .add_service(AlertsServer::new(AlertsService::new(ops.clone())))
        .add_service(SeizuresServer::new(SeizuresService::new(ops.clone())))
        .add_service(CoordinatorServer::new(CoordinatorService::new(ops.clone())))
        .add_service(TraceServer::new(TraceService::new(ops.clone())))
        .add_service(AuditServer::new(AuditService::new(ops)));
    Ok((router, health_reporter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_ends_before_it_outgrows_its_byte_budget() {
        let note = |kib: usize| crate::proto::AuditRecord {
            reason: "x".repeat(kib << 10),
            ..Default::default()
        };
        let (page, cut) = within_page_bytes((0..2000).map(|_| note(1)));
        let bytes: usize = page.iter().map(prost::Message::encoded_len).sum();
        assert!(
            cut && bytes <= PAGE_BYTES && bytes + 1030 > PAGE_BYTES,
            "{bytes}"
        );
        // One record larger than the budget still makes a page of one.
        let (page, cut) = within_page_bytes([note(2048), note(1)]);
        assert_eq!((page.len(), cut), (1, true));
        let (page, cut) = within_page_bytes((0..3).map(|_| note(1)));
        assert_eq!((page.len(), cut), (3, false));
    }
}
