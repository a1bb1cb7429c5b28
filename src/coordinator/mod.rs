//! The coordinator: verifies and stores what member states submit, reconciles
//! it into alerts, and serves operators.
//!
//! Data path: [`grpc`] decodes a request → [`admission`] verifies an upload
//! and commits it to [`storage`] → [`reconciler`] feeds the committed
//! snapshot to the domain engine and records alert changes → [`grpc`]
//! serves alerts, traces ([`trace`], [`lookup`]) and status. [`server`]
//! wires it together; [`lifecycle`] carries shutdown down to every stream.

pub mod admission;
pub mod archive;
pub mod commands;
pub mod grpc;
pub mod lifecycle;
pub mod lookup;
pub mod metrics;
pub mod ops;
pub mod reconciler;
pub mod server;
pub mod storage;
pub mod trace;
