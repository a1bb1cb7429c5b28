//! Tally: cross-ministry inventory reconciliation.
//!
//! Member-state nodes turn inventory exports into signed snapshots and submit
//! them over gRPC; the coordinator verifies them and stores them as evidence.
//!
//! Domain logic (`serial`, `item`, `export`, `merkle`, `snapshot`) is plain
//! synchronous Rust without I/O; `store`, `service`, `server` and `node` sit
//! at the edges.

pub mod access;
pub mod alerts;
pub mod archive;
pub mod audit;
pub mod audit_log;
pub mod certs;
pub mod cli;
pub mod config;
pub mod demo;
pub mod evidence;
pub mod export;
pub mod generate;
pub mod health;
pub mod ingest;
pub mod item;
pub mod keys;
pub mod lifecycle;
pub mod lookup;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod progress;
pub mod quote;
pub mod reconcile;
pub mod reconciler;
pub mod seizures;
pub mod serial;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod tls;
pub mod trace;
pub mod trace_view;

/// Generated protobuf and gRPC types (`proto/tally/v1`). They stop at the service edge.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tally.v1");

    /// Encoded descriptor set of `proto/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tally_descriptor");
}
