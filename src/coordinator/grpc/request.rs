//! What the gRPC edge itself refuses, before any operation sees a request:
//! a `Submit` stream's messages out of order or too large, an upload that
//! stalls or ends early, a coordinator too busy or shutting down, a client
//! certificate that names no state. Each variant owns its message; its gRPC
//! status code is given in one place, [`super::status`]. What an operation
//! refuses in its request is `ops::RequestError`.

use crate::support::tls::TlsError;

/// Why the gRPC edge refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EdgeRefusal {
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

    // The connection.
    /// The client certificate of the connection names no member state, or
    /// is not X.509.
    #[error(transparent)]
    Certificate(TlsError),
}
