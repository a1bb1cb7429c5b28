//! Tally's domain core: pure, synchronous Rust with no network, storage or
//! async runtime (its Cargo.toml cannot name tonic, prost, sled or tokio).
//!
//! - Inputs made valid once: [`state`] codes, [`serial`] canonical forms,
//!   [`item`]s, the ministries' CSV export ([`inventory_csv`]).
//! - Evidence: the [`merkle`] tree, [`snapshot`] encoding, digests and
//!   signatures, offline-verifiable [`evidence`] bundles.
//! - Decisions: the [`reconcile`] engine (rules, checkpoint), [`alert`]s and
//!   their lifecycle, [`access`] roles and the permission table, signed
//!   [`audit`] records and their chain.
//! - What the coordinator answers operators with: an item's custody
//!   [`trail`], [`seizure`] reports and their matches, its status
//!   ([`overview`]).

pub mod access;
pub mod alert;
pub mod audit;
pub mod evidence;
pub mod inventory_csv;
pub mod item;
pub mod merkle;
pub mod overview;
pub mod quote;
pub mod reconcile;
pub mod seizure;
pub mod serial;
pub mod snapshot;
pub mod state;
pub mod trail;
