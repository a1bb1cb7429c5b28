//! The coordinator's serving state, passed down to every service that holds
//! work open: submissions in flight and alert watchers.
//!
//! Shutdown happens in one direction: serving → draining. While draining, new
//! submissions are refused, watch streams end, and the server waits (up to
//! its grace period) for the submissions already in flight.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    draining: bool,
    in_flight: usize,
}

/// Shared handle on the serving state. Cloning is cheap; every clone sees the
/// same state.
///
/// One `watch` channel holds both the flag and the count, so "is it still
/// serving?" and "count me in" are one atomic step: a submission can never
/// start after the server has seen zero in flight and moved on.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: watch::Sender<State>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

/// Held by a submission for as long as it runs; dropping it counts it out.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: watch::Sender<State>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.send_modify(|s| s.in_flight -= 1);
    }
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle {
            state: watch::Sender::new(State::default()),
        }
    }

    /// Counts a new submission in, or returns `None` if the coordinator is
    /// draining and must refuse it.
    pub(crate) fn begin_submission(&self) -> Option<InFlight> {
        let admitted = self.state.send_if_modified(|s| {
            if s.draining {
                false
            } else {
                s.in_flight += 1;
                true
            }
        });
        admitted.then(|| InFlight {
            state: self.state.clone(),
        })
    }

    /// Returns true if and only if shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.state.borrow().draining
    }

    /// Begins shutdown: refuses new submissions and ends watch streams.
    pub(crate) fn start_draining(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.draining, true));
    }

    /// Submissions currently running.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn draining(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|s| s.draining).await;
    }

    /// Resolves once no submission is in flight.
    pub async fn idle(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.in_flight == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_refuses_new_submissions_and_waits_for_running_ones() {
        let life = Lifecycle::new();
        let first = life.begin_submission().expect("serving admits");
        assert_eq!(life.in_flight(), 1);
        life.start_draining();
        assert!(life.is_draining());
        assert!(life.begin_submission().is_none(), "draining refuses");
        life.draining().await;

        let idle = tokio::spawn({
            let life = life.clone();
            async move { life.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "one submission still runs");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), idle)
            .await
            .expect("idle once the last submission ends")
            .expect("task");
        assert_eq!(life.in_flight(), 0);
    }
}
