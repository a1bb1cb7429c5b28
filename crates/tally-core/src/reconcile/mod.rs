//! The reconciliation engine: from the states' accepted snapshots, the set of
//! discrepancy alerts that are open now (docs/alerts.md).
//!
//! Plain synchronous Rust, no I/O: snapshots go in (in acceptance order),
//! alert changes come out. Time is an input (`now_unix_ms`), so time-based
//! rules are deterministic and testable.
//!
//! # What is tracked
//! "Held" means `in_service` or `in_storage`. For every item key and state the
//! engine knows which statuses the state's *latest* snapshot lists for the
//! key (a key may be listed more than once). Besides that, it keeps a few
//! small records that outlive a snapshot:
//! - **vanished** (key, state): the key was held in the state's previous
//!   snapshot and is absent (no row at all) from the next one. Removed when a
//!   later snapshot of that state lists the key again, with any status.
//! - **transfer** (key, from, to): the state's snapshot lists the key as
//!   `transferred_out` to `to` and its previous snapshot did not. Kept while
//!   the state's most recent mention of the key is that declaration (later
//!   snapshots may repeat it or drop the row); removed once `to`'s latest
//!   snapshot holds the key (received), or when a later snapshot of the state
//!   lists the key but not as `transferred_out` to `to` (withdrawn). While a
//!   record exists, repeating the declaration does not create a new one (the
//!   grace period runs from the first declaration).
//! - **disposal** (key): the first snapshot of each state that declared the
//!   key `destroyed` or `expended`. Never removed.
//! - **last mention** (key, state): for a key no longer in the state's latest
//!   snapshot, the last snapshot that listed it and the statuses it had there.
//! - **last held** (key, state): for a key the state no longer holds, the last
//!   snapshot that held it and the first one that did not.
//!
//! # Rules: the alerts that are open for a key
//! | kind | open while |
//! | --- | --- |
//! | `duplicate_in_snapshot` (key, state) | the state's latest snapshot lists the key more than once |
//! | `held_by_several_states` (key) | two or more states' latest snapshots hold the key |
//! | `unaccounted_disappearance` (key, state) | a vanished record exists and no state holds the key |
//! | `undeclared_transfer` (key, state) | a vanished record exists and another state holds the key |
//! | `transfer_not_received` (key, from, to) | a transfer record exists, `now ≥ as_of + grace` of the declaring snapshot, and `to`'s latest snapshot does not hold the key |
//! | `disposed_item_reappears` (key) | a disposal record exists and some state's latest snapshot holds the key |
//! | `reported_lost` (key, state) | the state's most recent mention of the key lists it `lost` |
//! | `seized_item` (key) | a seizure report names the key (only an operator closes it) |
//! | `conflicting_submission` (state, sequence) | an equivocation was recorded for that state and sequence |
//! | `snapshot_overdue` (state) | the state has a cadence and `now > as_of + cadence` of its latest snapshot (a state that never submitted is shown by the coordinator status instead) |
//!
//! An alert's identity is its kind plus the fields in brackets. Re-evaluation
//! updates an open alert; it never opens a second one for the same identity.
//! When the condition stops holding the alert is cleared, naming the snapshot
//! whose arrival cleared it (none when the clock cleared it).
//!
//! # Precise points
//! These follow from the definitions above; the oracle test
//! (`tests/reconcile_oracle.rs`) checks each.
//! - A state holds a key if any of its rows for the key is held; the same
//!   test decides "vanished" and "received".
//! - A state's first snapshot never creates a vanished record, and a key
//!   that went from held to declared (lost, transferred, disposed) and then
//!   absent leaves none either.
//! - One snapshot may declare a key transferred to two states: two records,
//!   neither withdraws the other. A transfer whose receiver already holds the
//!   key when it is declared is received at once.
//! - `disposed_item_reappears` opens in any order of events, including a
//!   holder that held the key before another state declared it destroyed.
//! - `reported_lost` stays open after later snapshots drop the row.
//! - Time: every call that takes `now_unix_ms` also applies the clock, so a
//!   snapshot of one state can open time-based alerts of others. `now` is
//!   expected never to go back; a snapshot's as-of time may be later than
//!   `now` (its grace period then simply has not started).
//! - Alert identity fields: only those in brackets in the table are set;
//!   for `transfer_not_received`, `state` is the sender and `counterparty`
//!   the receiver.
//!
//! # Cost model
//! Applying a snapshot of `n` items walks its items once (interning keys and
//! comparing each key's statuses with the previous snapshot's: O(n) hash
//! lookups) and walks the previous key list once to find removed keys. Rules
//! are evaluated only for keys whose statuses changed, plus keys named by
//! transfer records whose grace period ends (kept in a deadline queue), so
//! evaluation costs O(changed keys). Evidence lines are not part of that:
//! the engine builds alert bodies through a [`LineSource`] ([`attach_lines`]
//! fills them in last), and the coordinator runs it with [`NoLines`] and
//! reads lines afterwards only for the alerts that were opened or updated,
//! so evidence costs one chunk lookup per evidence snapshot of a *changed
//! alert*, not of every re-evaluated one. Memory per distinct key is one
//! interned key plus one byte per member state.

mod engine;
mod keys;
pub mod model;

pub use engine::{CHECKPOINT_FORMAT_VERSION, CheckpointError, Engine, EngineConfig, attach_lines};

/// Most states one engine tracks (holder sets are 128-bit masks).
pub const MAX_STATES: usize = 128;
pub use model::*;

#[cfg(test)]
mod tests;
