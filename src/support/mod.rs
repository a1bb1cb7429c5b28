//! What every role needs: configuration files, key files, TLS and
//! certificates, progress reporting.

pub mod certs;
pub mod clock;
pub mod config;
pub mod keys;
pub mod progress;
pub mod signals;
pub mod tls;
