//! The gRPC edge: decode protobuf into validated domain types, call the
//! domain, encode the answer. Generated types stop here; errors are mapped to
//! `tonic::Status` once, in [`status`].

pub mod alerts;
pub mod convert;
pub mod operations;
pub mod snapshots;
pub mod status;
pub mod trace;
