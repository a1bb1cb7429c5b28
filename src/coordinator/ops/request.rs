//! What an operation refuses in its request, whatever the transport that
//! carried it: a field that is too long or does not canonicalise, a name or
//! number that means nothing, something asked for that does not exist, a
//! watch while the coordinator stops. Each variant owns its message; its
//! status code is given in `grpc::status`.
//!
//! A transport decodes its request into the operation's domain input, or
//! into one of these ([`Decoded`]); the operation looks at it only after the
//! permission check, so a caller who may not call it learns that first.

use crate::quote::excerpt;
use crate::reconcile::AlertKind;
use crate::serial::{CanonicalError, CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};
use crate::state::{InvalidStateCode, StateCode};

/// A request as its transport decoded it: the operation's input, or why
/// there is none.
pub(crate) type Decoded<T> = Result<T, RequestError>;

/// Why an operation refused its request (the domain's own refusals have
/// error types of their own: `ActionError`, `IngestError`, ...).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    // Fields.
    #[error(transparent)]
    State(#[from] InvalidStateCode),
    /// A query field (`TraceItem`, the `ListAlerts` model filter) over
    /// [`MAX_QUERY_FIELD_BYTES`].
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
    /// `valid` lists the reasons as the caller's transport names them.
    #[error("unknown or missing resolution reason {code}: use one of {valid}")]
    UnknownResolutionReason { code: i32, valid: String },
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

    // The coordinator's own state.
    #[error("the coordinator is shutting down; watch again once it is back, from your last cursor")]
    WatchShuttingDown,
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

/// The longest model or serial a query (`TraceItem`, the `ListAlerts` model
/// filter) may carry. Exports are held to [`crate::item::MAX_FIELD_BYTES`]
/// per raw field, but a query may spell the same canonical form longer
/// (full-width letters, separators), so it gets four times that: enough for
/// any real lookup, and a bound on what is canonicalised and echoed.
pub(crate) const MAX_QUERY_FIELD_BYTES: usize = 4 * crate::item::MAX_FIELD_BYTES;

/// Refuses a query field longer than [`MAX_QUERY_FIELD_BYTES`].
pub(crate) fn check_field_len(field: &'static str, value: &str) -> Result<(), RequestError> {
    let max = MAX_QUERY_FIELD_BYTES;
    if value.len() > max {
        return Err(RequestError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The item key a query names, canonicalised with `rule`: both fields'
/// lengths are checked first, then the model's and the serial's canonical
/// forms.
pub(crate) fn item_key(
    model: &str,
    serial: &str,
    rule: &CanonicalRule,
) -> Result<ItemKey, RequestError> {
    for (field, value) in [("model", model), ("serial", serial)] {
        check_field_len(field, value)?;
    }
    let model =
        CanonicalModel::from_raw(model, rule).map_err(|error| RequestError::KeyNotCanonical {
            field: "model",
            value: model.to_string(),
            error,
        })?;
    let serial =
        CanonicalSerial::from_raw(serial, rule).map_err(|error| RequestError::KeyNotCanonical {
            field: "serial",
            value: serial.to_string(),
            error,
        })?;
    Ok(ItemKey { model, serial })
}
