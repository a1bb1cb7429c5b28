//! Tally's wire format: the generated protobuf and gRPC types of `proto/`,
//! and every conversion between them and `tally_core`'s domain types.
//!
//! Client (node, operator CLI) and server (coordinator) both convert here, so
//! a message means the same thing on both sides. Generated types stop at the
//! edge of whatever uses this crate: the domain never sees them.

pub mod alerts;
pub mod audit;
pub mod convert;
pub mod evidence;
pub mod seizures;
pub mod status;
pub mod trace;

/// Generated protobuf and gRPC types (`proto/tally/v1`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tally.v1");

    /// Encoded descriptor set of `proto/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tally_descriptor");
}
