//! Integration tests: one binary (links stay fast), one module per area.

mod alerts_api;
mod archive;
mod audit;
mod cli_operator;
mod common;
mod compose;
mod config_examples;
mod demo;
mod fuzz_checks;
mod fuzzing;
mod health;
mod kill;
mod limits;
mod node;
mod observability;
mod operations;
mod protocol;
mod readme;
mod reconcile_oracle;
mod reconciliation;
mod security;
mod submission;
mod submission_errors;
mod trace;
mod watch;
