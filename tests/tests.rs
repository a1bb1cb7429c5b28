//! Integration tests: one binary (links stay fast), one module per area.

mod alerts_api;
mod cli_operator;
mod common;
mod config_examples;
mod node;
mod operations;
mod protocol;
mod reconcile_oracle;
mod reconciliation;
mod security;
mod submission;
mod submission_errors;
mod trace;
