//! Integration tests: one binary (links stay fast), one module per area.

mod common;
mod submission;
mod submission_errors;
