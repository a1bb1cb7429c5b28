//! What a request can be refused for at the gRPC edge, before or beside the
//! domain: a malformed or out-of-order message, a field that is too long or
//! does not canonicalise, something asked for that does not exist, a
//! coordinator that is busy or shutting down. Each variant owns its message;
//! its gRPC status code is given in one place, [`super::status`].

use crate::coordinator::storage::alerts::ResolutionReason;
use crate::quote::excerpt;
use crate::reconcile::AlertKind;
use crate::serial::CanonicalError;
use crate::state::{InvalidStateCode, StateCode};
use crate::support::tls::TlsError;

/// Why a request was refused by a service itself (the domain's refusals
/// have error types of their own: `IngestError`, `ActionError`, ...).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    // `Submit`: the order of the stream's messages.
    #[error("the first message must be a SnapshotHeader, got an ItemChunk")]
    FirstMessageIsChunk,
    #[error("the first message is empty: it must be a SnapshotHeader")]
    FirstMessageEmpty,
    #[error("the stream ended before a SnapshotHeader arrived")]
    NoHeader,
    #[error("a second SnapshotHeader arrived: send one header, then item chunks")]
    SecondHeader,
    #[error("an empty message arrived where an ItemChunk was expected")]
    EmptyChunk,
    /// tonic refused a message over the configured size; `detail` is its text.
    #[error(
        "a message is larger than the coordinator's limit of {limit} bytes \
         (limits.max_message_bytes); send smaller item chunks ({detail})"
    )]
    MessageTooLarge { limit: usize, detail: String },
    #[error(
        "no message for {seconds} s (limits.upload_idle_timeout_seconds): upload dropped, \
         nothing stored"
    )]
    UploadIdle { seconds: u64 },
    #[error("upload ended early; nothing stored")]
    UploadEndedEarly,

    // The coordinator's own state.
    /// Load shedding: `limit` uploads are being verified already.
    #[error(
        "the coordinator is busy verifying {limit} uploads already \
         (limits.max_concurrent_uploads); nothing stored, retry shortly"
    )]
    Busy { limit: usize },
    #[error(
        "the coordinator is shutting down and accepts no new submissions; nothing was stored: \
         submit again once it is back (tally node retries by itself)"
    )]
    ShuttingDown,
    #[error("the coordinator is shutting down; watch again once it is back, from your last cursor")]
    WatchShuttingDown,

    // Fields.
    /// The client certificate of the connection names no member state, or
    /// is not X.509.
    #[error(transparent)]
    Certificate(TlsError),
    #[error(transparent)]
    State(#[from] InvalidStateCode),
    /// A query field (`TraceItem`, the `ListAlerts` model filter) over
    /// [`super::MAX_QUERY_FIELD_BYTES`].
    #[error("{field} is {len} bytes long; at most {max} bytes are allowed")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// `TraceItem`'s model or serial has no canonical form.
    #[error("{field} {:?} {error}", excerpt(.value))]
    KeyNotCanonical {
        field: &'static str,
        value: String,
        error: CanonicalError,
    },
    #[error("unknown alert kind '{}': use one of {}", excerpt(.0), alert_kinds())]
    UnknownAlertKind(String),
    #[error("unknown alert status {0}")]
    UnknownAlertStatus(i32),
    #[error("model filter '{}' {error}", excerpt(.value))]
    ModelFilterNotCanonical {
        value: String,
        error: CanonicalError,
    },
    #[error(
        "page_token '{}' is not one this server issued: pass next_page_token back unchanged",
        excerpt(.0)
    )]
    UnknownPageToken(String),
    #[error(
        "unknown or missing resolution reason {code}: use one of {}",
        resolution_reasons()
    )]
    UnknownResolutionReason { code: i32 },
    #[error("a seizure report needs at least one item")]
    EmptySeizureReport,
    #[error("{count} items in one report; at most {max} are accepted")]
    TooManySeizedItems { count: usize, max: usize },
    #[error("items[{index}]: {problem}")]
    SeizedItem {
        index: usize,
        problem: SeizedItemError,
    },

    // What was asked for.
    #[error("{state} has no accepted snapshot {sequence}")]
    NoSnapshot { state: StateCode, sequence: u64 },
    #[error("no alert with id {0}")]
    NoAlert(u64),
    /// `WatchAlerts` from a cursor the alert store has not reached.
    #[error(
        "cursor {after} is beyond the newest alert event ({newest}): it is not from this \
         coordinator's alert store (rebuilt stores start their cursors again); watch from 0 to \
         replay every event, or from {newest} for new ones only"
    )]
    CursorAhead { after: u64, newest: u64 },
}

/// Why one item of a seizure report was refused (the message is prefixed
/// with the item's index, see [`RequestError::SeizedItem`]).
#[derive(Debug, thiserror::Error)]
pub enum SeizedItemError {
    #[error("{field} is {len} bytes long; at most {max} bytes are allowed")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// Unset (0) or before 1970: it would mislead whoever reads the trace.
    #[error(
        "seized_at_unix_ms is {at}; set it to the time of the seizure \
         (milliseconds since 1970-01-01 UTC)"
    )]
    TimeUnset { at: i64 },
    #[error(
        "seized_at_unix_ms {at} is in the future by the coordinator's clock \
         (now {now}); milliseconds, not microseconds, since 1970-01-01 UTC"
    )]
    TimeInFuture { at: i64, now: i64 },
    /// The model or serial has no canonical form (`value` is bounded by
    /// the length check before it).
    #[error("{field} '{value}' {error}")]
    NotCanonical {
        field: &'static str,
        value: String,
        error: CanonicalError,
    },
}

/// Every alert kind's name, for a message that lists the valid ones.
fn alert_kinds() -> String {
    let valid: Vec<&str> = AlertKind::ALL.iter().map(|x| x.as_str()).collect();
    valid.join(", ")
}

/// Every resolution reason, named as a gRPC client writes them, with the
/// CLI's spelling beside.
fn resolution_reasons() -> String {
    let valid: Vec<String> = ResolutionReason::ALL
        .iter()
        .map(|r| {
            let p = tally_wire::alerts::reason_to_proto(*r);
            format!("{} = {} ({})", p.as_str_name(), p as i32, r.as_str())
        })
        .collect();
    valid.join(", ")
}
