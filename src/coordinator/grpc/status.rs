//! The one place where domain errors become gRPC status codes.

use tonic::{Code, Status};

use crate::coordinator::admission::IngestError;
use crate::coordinator::storage::StoreError;
use crate::coordinator::trace::TraceError;

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
            IngestError::Store(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "storage failure during ingest");
        }
        Status::new(code, e.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        tracing::error!(error = %e, "storage failure");
        Status::internal(e.to_string())
    }
}

impl From<TraceError> for Status {
    /// Every trace error is the coordinator's: its storage or its state.
    fn from(e: TraceError) -> Status {
        tracing::error!(error = %e, "trace failed");
        Status::internal(e.to_string())
    }
}

/// A protobuf message that does not decode into its domain type.
pub fn malformed(e: tally_wire::convert::Malformed) -> Status {
    Status::invalid_argument(e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
