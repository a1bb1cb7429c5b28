//! The wall clock, passed down as a value.
//!
//! Everything that stamps or compares times (receipts, alert changes, audit
//! records, the clock-based rules: transfer grace periods and cadences) reads
//! the time through a [`Clock`] handed to it, so that a test can set the time
//! instead of sleeping, and a whole coordinator can be run at a chosen moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, from some source. Cloning is cheap;
/// clones read the same source.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock that stands at `unix_ms` until told otherwise through the
    /// returned [`ManualTime`] (for tests).
    pub fn manual(unix_ms: i64) -> (Clock, ManualTime) {
        let now = Arc::new(AtomicI64::new(unix_ms));
        (Clock(Source::Manual(now.clone())), ManualTime(now))
    }

    /// The time now, in milliseconds since the Unix epoch.
    pub fn now_unix_ms(&self) -> i64 {
        match &self.0 {
            Source::System => system_now_unix_ms(),
            Source::Manual(now) => now.load(Ordering::SeqCst),
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(now) => write!(f, "Clock::manual({})", now.load(Ordering::SeqCst)),
        }
    }
}

/// The hand that moves a [`Clock::manual`].
#[derive(Debug, Clone)]
pub struct ManualTime(Arc<AtomicI64>);

impl ManualTime {
    /// Sets the time to `unix_ms`.
    pub fn set(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }

    /// Moves the time on by `ms` milliseconds.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// The operating system's wall clock, in milliseconds since the Unix epoch
/// (0 for a clock set before 1970).
pub fn system_now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_all_clones_see_it() {
        let (clock, hand) = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now_unix_ms(), 1_000);
        hand.advance(500);
        assert_eq!(copy.now_unix_ms(), 1_500);
        hand.set(42);
        assert_eq!(clock.now_unix_ms(), 42);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_unix_ms() > 1_577_836_800_000);
    }
}
