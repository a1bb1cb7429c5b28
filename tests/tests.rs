//! Integration tests: one binary (links stay fast on two cores), one module
//! per area. A new test goes into the module of the area it pins down; a new
//! area gets a module here, with its line below.

/// The operator side of alerts over real gRPC: actions, history, watching.
mod alerts_api;
/// `tally export` / `tally import`: round trips and tampered archives.
mod archive;
/// The audit trail: what is recorded, its chain, `tally audit verify`.
mod audit;
/// The operator CLI (the real binary) against a real coordinator.
mod cli_operator;
/// Shared fixtures: an in-process coordinator on 127.0.0.1:0, nodes, keys.
mod common;
/// docker-compose.yml and the Dockerfile, checked without a Docker engine.
mod compose;
/// The commented example configurations in `config/` and their docs.
mod config_examples;
/// `tally demo` end to end, at a small size.
mod demo;
/// Properties shared with the cargo-fuzz targets (`fuzz/`).
mod fuzz_checks;
/// The fuzz properties as bounded property tests.
mod fuzzing;
/// `tally health` against serving, draining and absent coordinators.
mod health;
/// Kill tests: SIGKILL the coordinator and the node mid-work, then check.
mod kill;
/// Coordinator limits: concurrent uploads, stalled uploads, sizes.
mod limits;
/// The member node: export, outbox, submission, refusals.
mod node;
/// Metrics, RPC spans, JSON logs and graceful shutdown.
mod observability;
/// Seizure reports and coordinator status over real gRPC.
mod operations;
/// docs/protocol.md's vectors, recomputed by the code and by Python.
mod protocol;
/// README.md and docs/: the hand-run session and every documented command.
mod readme;
/// An independent oracle of every reconciliation rule, against the engine.
mod reconcile_oracle;
/// Reconciliation through the real coordinator: alerts, restarts, rebuilds.
mod reconciliation;
/// Mutual TLS, bearer tokens, and every RPC for every kind of caller.
mod security;
/// The happy path: chains of snapshots, restarts.
mod submission;
/// Bad input: each case gets its status code and an actionable message.
mod submission_errors;
/// Two submissions of one state at once, the race decided by a gated store.
mod submission_races;
/// The custody trace and evidence bundles.
mod trace;
/// `tally node watch`: the drop folder.
mod watch;
