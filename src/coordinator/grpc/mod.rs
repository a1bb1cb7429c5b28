//! The gRPC edge: decode protobuf into validated domain types, call the
//! domain, encode the answer. Generated types stop here; errors are mapped to
//! `tonic::Status` once, in [`status`] (the services' own refusals are
//! [`request::RequestError`]s).

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
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|source| status::EdgeFailure::Task {
            what: "task",
            source,
        })?
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

/// The longest model or serial a query (`TraceItem`, the `ListAlerts` model
/// filter) may carry. Exports are held to [`crate::item::MAX_FIELD_BYTES`]
/// per raw field, but a query may spell the same canonical form longer
/// (full-width letters, separators), so it gets four times that: enough for
/// any real lookup, and a bound on what is canonicalised and echoed.
pub(crate) const MAX_QUERY_FIELD_BYTES: usize = 4 * crate::item::MAX_FIELD_BYTES;

/// Refuses a query field longer than [`MAX_QUERY_FIELD_BYTES`].
pub(crate) fn check_field_len(
    field: &'static str,
    value: &str,
) -> Result<(), request::RequestError> {
    let max = MAX_QUERY_FIELD_BYTES;
    if value.len() > max {
        return Err(request::RequestError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
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
