//! The one place where an error becomes a gRPC status: every error the
//! services answer with is mapped to its code here, and nowhere else.
//!
//! - The coordinator's own error types get `impl From<_> for Status`
//!   ([`IngestError`], [`StoreError`], [`TraceError`], [`ReconcileError`],
//!   [`ActionError`], [`AlertStoreError`], [`SeizureLogError`],
//!   [`AuditLogError`]), so a service passes them on with `?`.
//! - The operations' errors are [`OpsError`]s: their refusals of a request
//!   [`RequestError`]s (messages in `ops::request`), an action done but not
//!   audited [`NotAudited`]; [`ops_code`] is also the code their audit
//!   records carry.
//! - What the edge itself refuses is an [`EdgeRefusal`] (messages in
//!   `super::request`), and its own failures (a task that panicked)
//!   [`EdgeFailure`]s.
//! - Errors of `tally_core` and `tally_wire`, which the orphan rule keeps
//!   from an `impl From`, have a function each: [`access`] and
//!   [`malformed`].
//!
//! A status's message is always its error's `Display`. Every `INTERNAL` is
//! logged here, once, at error level. The codes are those of
//! docs/protocol.md §6; the table test below lists every variant of every
//! type mapped here with its code.

use tonic::{Code, Status};

use crate::access::AccessError;
use crate::coordinator::admission::IngestError;
use crate::coordinator::ops::{NotAudited, OpsError, RequestError};
use crate::coordinator::reconciler::ReconcileError;
use crate::coordinator::storage::StoreError;
use crate::coordinator::storage::alerts::{ActionError, AlertStoreError};
use crate::coordinator::storage::audit_log::AuditLogError;
use crate::coordinator::storage::seizures::SeizureLogError;
use crate::coordinator::trace::TraceError;

use super::request::EdgeRefusal;

/// A failure of the gRPC edge itself, answered `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EdgeFailure {
    /// A task the RPC ran its work in panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
}

/// `INTERNAL`, logged: the coordinator's fault, never the caller's.
fn internal(e: &dyn std::fmt::Display, what: &str) -> Status {
    tracing::error!(error = %e, "{what}");
    Status::internal(e.to_string())
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Status {
        let code = match &e {
            IngestError::UnknownState(_) => Code::PermissionDenied,
            IngestError::BadSignature(_) => Code::Unauthenticated,
            IngestError::MalformedHeader(_) | IngestError::Items(_) => Code::InvalidArgument,
            IngestError::TooManyItems { .. } => Code::ResourceExhausted,
            IngestError::SequenceGap { .. } | IngestError::ChainMismatch { .. } => {
                Code::FailedPrecondition
            }
            IngestError::Conflict { .. } => Code::AlreadyExists,
            IngestError::Store(StoreError::ChainMoved { .. }) => Code::Aborted,
            IngestError::Store(_) => return internal(&e, "storage failure during ingest"),
        };
        Status::new(code, e.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        internal(&e, "storage failure")
    }
}

impl From<TraceError> for Status {
    /// Every trace error is the coordinator's: its storage or its state.
    fn from(e: TraceError) -> Status {
        internal(&e, "trace failed")
    }
}

impl From<ReconcileError> for Status {
    fn from(e: ReconcileError) -> Status {
        internal(&e, "reconciler failure")
    }
}

/// An action's refusal's code; `None` for the coordinator's own failures.
fn action_code(e: &ActionError) -> Option<Code> {
    match e {
        ActionError::NotFound(_) => Some(Code::NotFound),
        ActionError::NoteTooLong { .. } => Some(Code::InvalidArgument),
        ActionError::InvalidTransition { .. } => Some(Code::FailedPrecondition),
        ActionError::Store(_) | ActionError::NotDurable { .. } => None,
    }
}

impl From<ActionError> for Status {
    fn from(e: ActionError) -> Status {
        match action_code(&e) {
            Some(code) => Status::new(code, e.to_string()),
            None => internal(&e, "alert storage failure"),
        }
    }
}

/// The code of an operation's error: what its status carries, and what its
/// audit record's outcome names.
pub(crate) fn ops_code(e: &OpsError) -> Code {
    match e {
        OpsError::Access(e) => access_code(e),
        OpsError::Request(e) => request_code(e),
        OpsError::Action(e) => action_code(e).unwrap_or(Code::Internal),
        OpsError::Reconcile(_)
        | OpsError::Alerts(_)
        | OpsError::Seizures(_)
        | OpsError::Store(_)
        | OpsError::Trace(_)
        | OpsError::Audit(_)
        | OpsError::NotAudited(_)
        | OpsError::SeizuresUnmatched { .. } => Code::Internal,
    }
}

/// [`ops_code`] as the audit trail numbers it: what the operations are
/// given to record their outcomes with.
pub(crate) fn ops_outcome_code(e: &OpsError) -> u32 {
    ops_code(e) as u32
}

impl From<OpsError> for Status {
    fn from(e: OpsError) -> Status {
        match e {
            OpsError::Access(e) => access(e),
            OpsError::Request(e) => e.into(),
            OpsError::Action(e) => e.into(),
            OpsError::Reconcile(e) => e.into(),
            OpsError::Alerts(e) => e.into(),
            OpsError::Seizures(e) => e.into(),
            OpsError::Store(e) => e.into(),
            OpsError::Trace(e) => e.into(),
            OpsError::Audit(e) => e.into(),
            OpsError::NotAudited(e) => e.into(),
            e @ OpsError::SeizuresUnmatched { .. } => internal(&e, "request failed"),
        }
    }
}

impl From<NotAudited> for Status {
    fn from(e: NotAudited) -> Status {
        internal(&e, "request failed")
    }
}

impl From<AlertStoreError> for Status {
    fn from(e: AlertStoreError) -> Status {
        internal(&e, "alert storage failure")
    }
}

impl From<SeizureLogError> for Status {
    fn from(e: SeizureLogError) -> Status {
        internal(&e, "seizure storage failure")
    }
}

impl From<AuditLogError> for Status {
    fn from(e: AuditLogError) -> Status {
        internal(&e, "audit trail failure")
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        Status::new(request_code(&e), e.to_string())
    }
}

fn request_code(e: &RequestError) -> Code {
    use RequestError as R;
    match e {
        R::State(_)
        | R::FieldTooLong { .. }
        | R::KeyNotCanonical { .. }
        | R::UnknownAlertKind(_)
        | R::UnknownAlertStatus(_)
        | R::ModelFilterNotCanonical { .. }
        | R::UnknownPageToken(_)
        | R::UnknownResolutionReason { .. }
        | R::EmptySeizureReport
        | R::SeizedItem { .. } => Code::InvalidArgument,
        R::TooManySeizedItems { .. } => Code::ResourceExhausted,
        R::NoSnapshot { .. } | R::NoAlert(_) => Code::NotFound,
        R::CursorAhead { .. } => Code::OutOfRange,
        R::WatchShuttingDown => Code::Unavailable,
    }
}

impl From<EdgeRefusal> for Status {
    fn from(e: EdgeRefusal) -> Status {
        Status::new(edge_code(&e), e.to_string())
    }
}

fn edge_code(e: &EdgeRefusal) -> Code {
    use EdgeRefusal as R;
    match e {
        R::FirstMessageIsChunk
        | R::FirstMessageEmpty
        | R::NoHeader
        | R::SecondHeader
        | R::EmptyChunk => Code::InvalidArgument,
        R::MessageTooLarge { .. } => Code::ResourceExhausted,
        R::UploadIdle { .. } => Code::DeadlineExceeded,
        R::UploadEndedEarly => Code::Cancelled,
        R::Busy { .. } | R::ShuttingDown => Code::Unavailable,
        R::Certificate(_) => Code::Unauthenticated,
    }
}

impl From<EdgeFailure> for Status {
    fn from(e: EdgeFailure) -> Status {
        internal(&e, "request failed")
    }
}

/// A refused call (the access layer, and a node acting for another state):
/// "who are you?" is `UNAUTHENTICATED`, "you may not" `PERMISSION_DENIED`.
pub fn access(e: AccessError) -> Status {
    Status::new(access_code(&e), e.to_string())
}

fn access_code(e: &AccessError) -> Code {
    match e {
        AccessError::NoCredentials { .. }
        | AccessError::UnknownToken
        | AccessError::MalformedToken => Code::Unauthenticated,
        AccessError::Denied { .. } => Code::PermissionDenied,
    }
}

/// A protobuf message that does not decode into its domain type.
pub fn malformed(e: tally_wire::convert::Malformed) -> Status {
    Status::invalid_argument(e.0)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::coordinator::lookup::LookupError;
    use crate::coordinator::ops::request::SeizedItemError;
    use crate::coordinator::storage::alerts::AlertStatus;
    use crate::serial::CanonicalError;
    use crate::snapshot::verify::VerifyError;
    use crate::snapshot::{BadSignature, SnapshotDigest};
    use crate::state::{InvalidStateCode, StateCode};
    use crate::support::tls::TlsError;
    use tally_wire::convert::Malformed;

    /// One variant mapped: the code it must get, and what it got.
    #[derive(Debug)]
    struct Row {
        variant: String,
        expected: Code,
        got: Code,
        /// The status's message differs from the error's `Display`.
        message_differs: bool,
    }

    /// The rows of one error type: `Variant => sample, CODE;`, each sample
    /// mapped by `$map`. The `match` has no wildcard: a variant added to the
    /// type does not compile until it has a row here.
    macro_rules! rows {
        ($ty:ident, $map:expr, { $($variant:ident => $sample:expr, $code:ident;)+ }) => {{
            #[allow(unreachable_patterns, dead_code)]
            fn every_variant_has_a_row(e: &$ty) {
                match e {
                    $($ty::$variant { .. } => {})+
                }
            }
            let map = $map;
            vec![$({
                let sample: $ty = $sample;
                assert!(
                    matches!(sample, $ty::$variant { .. }),
                    "the {} row's sample is another variant",
                    stringify!($ty::$variant)
                );
                let text = sample.to_string();
                let status: Status = map(sample);
                Row {
                    variant: stringify!($ty::$variant).replace(' ', ""),
                    expected: Code::$code,
                    got: status.code(),
                    message_differs: status.message() != text,
                }
            }),+]
        }};
    }

    fn rus() -> StateCode {
        StateCode::parse("RUS").unwrap()
    }

    fn sled_error() -> sled::Error {
        sled::Error::Unsupported("test".into())
    }

    fn store_error() -> StoreError {
        StoreError::Corrupt { what: "x".into() }
    }

    fn alert_store_error() -> AlertStoreError {
        AlertStoreError::Corrupt("x".into())
    }

    fn audit_log_error() -> AuditLogError {
        AuditLogError::NotEmpty
    }

    /// A real `JoinError`: a task cancelled before it ran.
    fn join_error() -> tokio::task::JoinError {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let task = tokio::spawn(std::future::pending::<()>());
            task.abort();
            task.await.unwrap_err()
        })
    }

    fn every_row() -> Vec<Row> {
        let digest = SnapshotDigest([7; 32]);
        let mut rows = Vec::new();
        rows.extend(rows!(IngestError, Status::from, {
            UnknownState => IngestError::UnknownState(rus()), PermissionDenied;
            BadSignature => BadSignature { state: rus() }.into(), Unauthenticated;
            MalformedHeader => IngestError::MalformedHeader("x".into()), InvalidArgument;
            TooManyItems => IngestError::TooManyItems { declared: 2, limit: 1 }, ResourceExhausted;
            SequenceGap => IngestError::SequenceGap { state: rus(), got: 3, last: 1, expected: 2 },
                FailedPrecondition;
            ChainMismatch => IngestError::ChainMismatch {
                state: rus(), sequence: 2, expected: digest, got: digest,
            }, FailedPrecondition;
            Conflict => IngestError::Conflict {
                state: rus(), sequence: 2, stored: digest, submitted: digest,
            }, AlreadyExists;
            Items => VerifyError::TooManyItems { declared: 1 }.into(), InvalidArgument;
            Store => StoreError::ChainMoved { state: rus(), sequence: 2 }.into(), Aborted;
            Store => store_error().into(), Internal;
        }));
        rows.extend(rows!(StoreError, Status::from, {
            Backend => sled_error().into(), Internal;
            InUse => StoreError::InUse { source: "locked".into() }, Internal;
            File => StoreError::File { path: "x".into(), source: io::Error::other("x") }, Internal;
            Corrupt => store_error(), Internal;
            ChainMoved => StoreError::ChainMoved { state: rus(), sequence: 2 }, Internal;
            Task => StoreError::Task("x".into()), Internal;
        }));
        rows.extend(rows!(TraceError, Status::from, {
            Lookup => LookupError::Store(store_error()).into(), Internal;
            Store => store_error().into(), Internal;
            Alerts => alert_store_error().into(), Internal;
            Reconcile => ReconcileError::Poisoned.into(), Internal;
            Damaged => TraceError::Damaged { state: rus(), sequence: 1, reason: "x".into() },
                Internal;
        }));
        rows.extend(rows!(ReconcileError, Status::from, {
            Store => store_error().into(), Internal;
            Alerts => alert_store_error().into(), Internal;
            Unreadable => ReconcileError::Unreadable {
                state: rus(), sequence: 1, source: store_error(),
            }, Internal;
            BadLeaf => ReconcileError::BadLeaf { state: rus(), sequence: 1, reason: "x".into() },
                Internal;
            Seizures => SeizureLogError::Corrupt("x".into()).into(), Internal;
            Poisoned => ReconcileError::Poisoned, Internal;
            Checkpoint => ReconcileError::Checkpoint {
                path: "x".into(), source: io::Error::other("x"),
            }, Internal;
        }));
        rows.extend(rows!(ActionError, Status::from, {
            NotFound => ActionError::NotFound(1), NotFound;
            NoteTooLong => ActionError::NoteTooLong { len: 2, max: 1 }, InvalidArgument;
            InvalidTransition => ActionError::InvalidTransition {
                id: 1, status: AlertStatus::Cleared, action: "reopened",
            }, FailedPrecondition;
            Store => alert_store_error().into(), Internal;
            NotDurable => ActionError::NotDurable { id: 1, source: alert_store_error() }, Internal;
        }));
        rows.extend(rows!(AlertStoreError, Status::from, {
            Backend => sled_error().into(), Internal;
            Corrupt => alert_store_error(), Internal;
        }));
        rows.extend(rows!(SeizureLogError, Status::from, {
            Backend => sled_error().into(), Internal;
            Corrupt => SeizureLogError::Corrupt("x".into()), Internal;
        }));
        rows.extend(rows!(AuditLogError, Status::from, {
            Backend => sled_error().into(), Internal;
            DamagedHead => AuditLogError::DamagedHead(1), Internal;
            NotEmpty => audit_log_error(), Internal;
            BadKey => AuditLogError::BadKey, Internal;
            Task => AuditLogError::Task("x".into()), Internal;
        }));
        let empty = CanonicalError::Empty;
        rows.extend(rows!(EdgeRefusal, Status::from, {
            FirstMessageIsChunk => EdgeRefusal::FirstMessageIsChunk, InvalidArgument;
            FirstMessageEmpty => EdgeRefusal::FirstMessageEmpty, InvalidArgument;
            NoHeader => EdgeRefusal::NoHeader, InvalidArgument;
            SecondHeader => EdgeRefusal::SecondHeader, InvalidArgument;
            EmptyChunk => EdgeRefusal::EmptyChunk, InvalidArgument;
            MessageTooLarge => EdgeRefusal::MessageTooLarge { limit: 1, detail: "x".into() },
                ResourceExhausted;
            UploadIdle => EdgeRefusal::UploadIdle { seconds: 1 }, DeadlineExceeded;
            UploadEndedEarly => EdgeRefusal::UploadEndedEarly, Cancelled;
            Busy => EdgeRefusal::Busy { limit: 1 }, Unavailable;
            ShuttingDown => EdgeRefusal::ShuttingDown, Unavailable;
            Certificate => EdgeRefusal::Certificate(TlsError::NoState { subject: "x".into() }),
                Unauthenticated;
        }));
        rows.extend(rows!(RequestError, Status::from, {
            State => InvalidStateCode("x".into()).into(), InvalidArgument;
            FieldTooLong => RequestError::FieldTooLong { field: "model", len: 2, max: 1 },
                InvalidArgument;
            KeyNotCanonical => RequestError::KeyNotCanonical {
                field: "model", value: "-".into(), error: empty.clone(),
            }, InvalidArgument;
            UnknownAlertKind => RequestError::UnknownAlertKind("x".into()), InvalidArgument;
            UnknownAlertStatus => RequestError::UnknownAlertStatus(99), InvalidArgument;
            ModelFilterNotCanonical => RequestError::ModelFilterNotCanonical {
                value: "-".into(), error: empty.clone(),
            }, InvalidArgument;
            UnknownPageToken => RequestError::UnknownPageToken("x".into()), InvalidArgument;
            UnknownResolutionReason => RequestError::UnknownResolutionReason {
                code: 99, valid: "x".into(),
            }, InvalidArgument;
            EmptySeizureReport => RequestError::EmptySeizureReport, InvalidArgument;
            TooManySeizedItems => RequestError::TooManySeizedItems { count: 2, max: 1 },
                ResourceExhausted;
            SeizedItem => RequestError::SeizedItem {
                index: 0, problem: SeizedItemError::TimeUnset { at: 0 },
            }, InvalidArgument;
            NoSnapshot => RequestError::NoSnapshot { state: rus(), sequence: 1 }, NotFound;
            NoAlert => RequestError::NoAlert(1), NotFound;
            CursorAhead => RequestError::CursorAhead { after: 2, newest: 1 }, OutOfRange;
            WatchShuttingDown => RequestError::WatchShuttingDown, Unavailable;
        }));
        // Mapped inside `RequestError::SeizedItem`, whose message prefixes
        // the item's index to the problem's.
        let item = |problem| {
            let status = Status::from(RequestError::SeizedItem { index: 3, problem });
            let message = status.message();
            Status::new(
                status.code(),
                message.strip_prefix("items[3]: ").unwrap_or(message),
            )
        };
        rows.extend(rows!(SeizedItemError, item, {
            FieldTooLong => SeizedItemError::FieldTooLong { field: "place", len: 2, max: 1 },
                InvalidArgument;
            TimeUnset => SeizedItemError::TimeUnset { at: 0 }, InvalidArgument;
            TimeInFuture => SeizedItemError::TimeInFuture { at: 2, now: 1 }, InvalidArgument;
            NotCanonical => SeizedItemError::NotCanonical {
                field: "serial", value: "-".into(), error: empty,
            }, InvalidArgument;
        }));
        rows.extend(rows!(EdgeFailure, Status::from, {
            Task => EdgeFailure::Task { what: "task", source: join_error() }, Internal;
        }));
        let not_audited = || NotAudited {
            action: "x".into(),
            source: audit_log_error(),
        };
        let status = Status::from(not_audited());
        rows.push(Row {
            variant: "NotAudited".into(),
            expected: Code::Internal,
            got: status.code(),
            message_differs: status.message() != not_audited().to_string(),
        });
        // An operation's audit record carries the code its caller is
        // answered with: a row whose two codes differ fails.
        let answered = |e: OpsError| {
            let recorded = ops_code(&e);
            let status = Status::from(e);
            if status.code() == recorded {
                status
            } else {
                Status::new(Code::Unknown, format!("recorded as {recorded:?}"))
            }
        };
        rows.extend(rows!(OpsError, answered, {
            Access => AccessError::UnknownToken.into(), Unauthenticated;
            Request => RequestError::NoAlert(7).into(), NotFound;
            Action => ActionError::NotFound(7).into(), NotFound;
            Reconcile => ReconcileError::Poisoned.into(), Internal;
            Alerts => AlertStoreError::Corrupt("x".into()).into(), Internal;
            Seizures => SeizureLogError::Corrupt("x".into()).into(), Internal;
            Store => store_error().into(), Internal;
            Trace => TraceError::from(store_error()).into(), Internal;
            Audit => audit_log_error().into(), Internal;
            NotAudited => not_audited().into(), Internal;
            SeizuresUnmatched => OpsError::SeizuresUnmatched {
                report_id: 1, source: ReconcileError::Poisoned,
            }, Internal;
        }));
        rows.extend(rows!(AccessError, access, {
            NoCredentials => AccessError::NoCredentials { rpc: "x".into() }, Unauthenticated;
            UnknownToken => AccessError::UnknownToken, Unauthenticated;
            MalformedToken => AccessError::MalformedToken, Unauthenticated;
            Denied => AccessError::Denied { who: "x".into(), rpc: "y".into(), why: "z" },
                PermissionDenied;
        }));
        let malformed = malformed(Malformed("x".into()));
        rows.push(Row {
            variant: "Malformed".into(),
            expected: Code::InvalidArgument,
            got: malformed.code(),
            message_differs: malformed.message() != "x",
        });
        rows
    }

    #[test]
    fn every_error_variant_maps_to_its_code_with_its_message() {
        let rows = every_row();
        let wrong: Vec<&Row> = rows
            .iter()
            .filter(|r| r.got != r.expected || r.message_differs)
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        // Rows name distinct variants, apart from the one variant whose code
        // depends on what it wraps (IngestError::Store: ABORTED or INTERNAL).
        let mut names: Vec<&str> = rows.iter().map(|r| r.variant.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), rows.len() - 1, "{names:?}");
    }

    /// The wall this file stands for: no other file of the gRPC edge makes a
    /// status of its own (`Status::from`, the mapping here, is the way in).
    #[test]
    fn services_build_no_status_of_their_own() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/coordinator/grpc");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name() == Some("status.rs".as_ref()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("Status::") {
                // `AlertStatus::`, `ServingStatus::` are other types.
                let named = text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_');
                let call = &text[at + "Status::".len()..];
                if !named && call.starts_with(char::is_lowercase) && !call.starts_with("from(") {
                    let line = text[..at].lines().count();
                    found.push(format!("{}:{line}", path.display()));
                }
            }
        }
        assert!(found.is_empty(), "map the error in status.rs: {found:?}");
    }

    /// The access mapping agrees with the core's own split of its errors.
    #[test]
    fn access_codes_follow_the_core() {
        for e in [
            AccessError::NoCredentials { rpc: "x".into() },
            AccessError::UnknownToken,
            AccessError::MalformedToken,
            AccessError::Denied {
                who: "x".into(),
                rpc: "y".into(),
                why: "z",
            },
        ] {
            let unauthenticated = e.is_unauthenticated();
            assert_eq!(access(e).code() == Code::Unauthenticated, unauthenticated);
        }
    }

    #[test]
    fn audit_code_names_follow_grpc_numbering() {
        for number in 0..=16u32 {
            let code = Code::from(number as i32);
            let expected = format!("{code:?}");
            // tonic's Debug is CamelCase; the audit trail uses the gRPC names.
            let camel: String = crate::audit::grpc_code_name(number)
                .split('_')
                .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
                .collect();
            assert_eq!(camel, expected, "code {number}");
        }
    }
}
