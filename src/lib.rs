//! Tally: cross-ministry inventory reconciliation.
//!
//! Member-state nodes turn inventory exports into signed snapshots and submit
//! them over gRPC; the coordinator verifies them, stores them as evidence and
//! reconciles them into discrepancy alerts. The domain itself lives in
//! `tally_core` (pure, no I/O) and the wire format in `tally_wire`; this crate
//! is the one binary's roles, a folder each (docs/architecture.md):
//!
//! - [`coordinator`]: admission of uploads, the reconciler driver, gRPC
//!   services, storage behind traits, trace, metrics, archive.
//! - [`node`]: a member state's exports → signed snapshots → outbox → upload.
//! - [`operator`]: the operator's and auditor's commands (alerts, trace,
//!   seizures, audit, status, health).
//! - [`cli`]: the command-line tree, and nothing else.
//! - [`support`]: configuration, keys, TLS and certificates, progress.
//! - [`dev`]: the data generator and the demo.

pub mod cli;
pub mod coordinator;
pub mod dev;
pub mod node;
pub mod operator;
pub mod support;

// The domain core and the wire format, under the names the rest of this
// crate uses.
pub use tally_core::{
    access, alert, audit, evidence, inventory_csv, item, merkle, overview, quote, reconcile,
    seizure, serial, snapshot, state, trail,
};
pub use tally_wire::proto;
