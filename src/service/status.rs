//! The one place where domain errors become gRPC status codes.

use tonic::{Code, Status};

use crate::ingest::IngestError;
use crate::store::StoreError;
use crate::trace::TraceError;

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
