//! Alerts: list, read and watch them (auditor), acknowledge, resolve and
//! reopen them (operator).

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::request::{Decoded, RequestError, check_field_len};
use super::{Caller, Ops, OpsError};
use crate::access::Operation;
use crate::audit::Action;
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::metrics::Metrics;
use crate::coordinator::storage::alerts::{
    Alert, AlertEvent, AlertStatus, AlertStore, ResolutionReason,
};
use crate::reconcile::AlertKind;
use crate::serial::{CanonicalModel, CanonicalRule};
use crate::state::StateCode;

/// Default and largest page of `ListAlerts`.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Stored events read per step when a watcher replays.
const REPLAY_BATCH: usize = 500;
/// Events queued for one watcher before it counts as slow.
const WATCH_QUEUE: usize = 256;

/// Which alerts a list shows; `None` fields match every alert.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertFilter {
    pub kind: Option<AlertKind>,
    /// The alert's state, or one of the states it names.
    pub state: Option<StateCode>,
    /// The canonical model of the alert's item.
    pub model: Option<CanonicalModel>,
    pub status: Option<AlertStatus>,
    /// Opened at or after this time.
    pub opened_since: i64,
}

impl AlertFilter {
    /// A filter by kind name, state code and model (canonicalised with
    /// `rule`), each empty for any, checked in that order; no status, and
    /// any opening time.
    pub fn parse(
        kind: &str,
        state: &str,
        model: &str,
        rule: &CanonicalRule,
    ) -> Result<AlertFilter, RequestError> {
        let kind = match kind {
            "" => None,
            k => Some(
                AlertKind::ALL
                    .into_iter()
                    .find(|x| x.as_str() == k)
                    .ok_or_else(|| RequestError::UnknownAlertKind(k.to_string()))?,
            ),
        };
        let state = match state {
            "" => None,
            s => Some(StateCode::parse(s)?),
        };
        let model = match model {
            "" => None,
            m => Some(check_field_len("model filter", m).and_then(|()| {
                CanonicalModel::from_raw(m, rule).map_err(|error| {
                    RequestError::ModelFilterNotCanonical {
                        value: m.to_string(),
                        error,
                    }
                })
            })?),
        };
        Ok(AlertFilter {
            kind,
            state,
            model,
            status: None,
            opened_since: 0,
        })
    }

    /// True if and only if `a` passes every field of the filter.
    fn matches(&self, a: &Alert) -> bool {
        self.kind.is_none_or(|k| a.key.kind == k)
            && self
                .state
                .is_none_or(|s| a.key.state == Some(s) || a.body.states.contains(&s))
            && self
                .model
                .as_ref()
                .is_none_or(|m| a.key.item.as_ref().is_some_and(|k| k.model == *m))
            && self.status.is_none_or(|s| a.status == s)
            && a.opened_at_unix_ms >= self.opened_since
    }
}

/// One page of a list: the filter, how many, from where.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertQuery {
    pub filter: AlertFilter,
    /// At most this many alerts (0: 100; at most 1000).
    pub page_size: usize,
    /// Newest first, from the alert below this id (`None`: the newest).
    pub before: Option<u64>,
}

/// The token that continues a list below the alert with id `last`.
pub(crate) fn page_token(last: u64) -> String {
    last.to_string()
}

/// Reads a token of [`page_token`] into [`AlertQuery::before`] (empty: from
/// the newest).
pub(crate) fn parse_page_token(token: &str) -> Result<Option<u64>, RequestError> {
    match token {
        "" => Ok(None),
        t => t
            .parse::<u64>()
            .map(Some)
            .map_err(|_| RequestError::UnknownPageToken(t.to_string())),
    }
}

/// A page of alerts, newest first.
#[derive(Debug, Clone)]
pub(crate) struct AlertPage {
    pub alerts: Vec<Alert>,
    /// More alerts match below the last one.
    pub more: bool,
}

impl Ops {
    /// One page of the alerts `query` asks for (auditor).
    pub fn list_alerts(
        &self,
        caller: &Caller,
        query: Decoded<AlertQuery>,
    ) -> Result<AlertPage, OpsError> {
        self.permit(caller, Operation::ListAlerts)?;
        let query = query?;
        let page = match query.page_size {
            0 => PAGE_DEFAULT,
            n => n.min(PAGE_MAX),
        };
        let before = query.before.unwrap_or(u64::MAX);
        let (alerts, more) = self
            .alerts()
            .page_before(before, page, |a| query.filter.matches(a))?;
        Ok(AlertPage { alerts, more })
    }

    /// Alert `id` (auditor).
    pub fn get_alert(&self, caller: &Caller, id: u64) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::GetAlert)?;
        Ok(self.alerts().get(id)?.ok_or(RequestError::NoAlert(id))?)
    }

    /// A watch of the alert events after cursor `after` (auditor), refused
    /// while the coordinator stops and for a cursor beyond the newest event.
    pub fn watch_alerts(&self, caller: &Caller, after: u64) -> Result<AlertWatch, OpsError> {
        self.permit(caller, Operation::WatchAlerts)?;
        if self.lifecycle.is_draining() {
            return Err(RequestError::WatchShuttingDown.into());
        }
        // A cursor beyond the newest event would skip events silently until
        // the store caught up with it: it comes from another coordinator, or
        // from before the alert store was rebuilt (cursors start again then).
        let mut newest = self.alerts().last_cursor();
        if after > newest {
            // Storage may be a moment ahead of the count (see
            // `AlertStore::last_cursor`): ask it before refusing.
            newest = self.alerts().last_stored_cursor()?;
        }
        if after > newest {
            return Err(RequestError::CursorAhead { after, newest }.into());
        }
        Ok(AlertWatch {
            alerts: self.alerts().clone(),
            after,
            lifecycle: self.lifecycle.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Acknowledges alert `id` (operator).
    pub fn acknowledge_alert(
        &self,
        caller: &Caller,
        id: u64,
        note: &str,
    ) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::AcknowledgeAlert)?;
        let now = self.clock.now_unix_ms();
        let result = self
            .alerts()
            .acknowledge(id, note, now)
            .map_err(OpsError::from);
        self.audited(caller, Action::AcknowledgeAlert { alert_id: id }, result)
    }

    /// Resolves alert `id` for `reason` (operator). A refusal of the reason
    /// is recorded too.
    pub fn resolve_alert(
        &self,
        caller: &Caller,
        id: u64,
        reason: Decoded<ResolutionReason>,
        note: &str,
    ) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::ResolveAlert)?;
        let action = Action::ResolveAlert {
            alert_id: id,
            reason: reason.as_ref().map_or("", |r| r.as_str()).to_string(),
        };
        let result = match reason {
            Ok(reason) => self
                .alerts()
                .resolve(id, reason, note, self.clock.now_unix_ms())
                .map_err(OpsError::from),
            Err(refused) => Err(refused.into()),
        };
        self.audited(caller, action, result)
    }

    /// Reopens alert `id` (operator).
    pub fn reopen_alert(&self, caller: &Caller, id: u64, note: &str) -> Result<Alert, OpsError> {
        self.permit(caller, Operation::ReopenAlert)?;
        let now = self.clock.now_unix_ms();
        let result = self.alerts().reopen(id, note, now).map_err(OpsError::from);
        self.audited(caller, Action::ReopenAlert { alert_id: id }, result)
    }
}

/// A watch the permission table allowed: the events after its cursor, then
/// live ones, once started.
pub(crate) struct AlertWatch {
    alerts: Arc<AlertStore>,
    after: u64,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
}

impl AlertWatch {
    /// Feeds the watcher from a task of its own (in the current span),
    /// counted as a connected watcher until it ends. The stream ends when
    /// the coordinator starts draining (cleanly: the watcher resumes from
    /// its last cursor), after a storage error (its last item), or once it
    /// is dropped. Call it on the async runtime.
    pub fn start(self) -> ReceiverStream<Result<AlertEvent, OpsError>> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let watcher = self.metrics.watcher_connected();
        let AlertWatch {
            alerts,
            after,
            lifecycle,
            metrics,
        } = self;
        tokio::spawn(
            async move {
                // Counted as connected until this task ends.
                let _watcher = watcher;
                tokio::select! {
                    _ = feed(alerts, &metrics, after, &tx) => {}
                    // Noticed at once, not at the next event: the gauge of
                    // connected watchers stays true.
                    _ = tx.closed() => tracing::debug!("watcher hung up"),
                    // Dropping `tx` ends the stream cleanly; the watcher
                    // resumes from its last cursor.
                    _ = lifecycle.draining() => tracing::info!("watch stream ended: shutting down"),
                }
            }
            .instrument(tracing::Span::current()),
        );
        ReceiverStream::new(rx)
    }
}

/// Feeds one watcher: stored events after its cursor, then live ones. The
/// live subscription starts before the replay, so nothing committed in
/// between is missed; events at or below the last one sent are skipped, so
/// nothing is sent twice. A watcher that falls behind the live buffer goes
/// back to reading storage from its last cursor (counted in `metrics`):
/// memory stays bounded and ingestion never waits for it.
async fn feed(
    alerts: Arc<AlertStore>,
    metrics: &Metrics,
    mut last: u64,
    tx: &mpsc::Sender<Result<AlertEvent, OpsError>>,
) {
    let mut live = alerts.subscribe();
    loop {
        // Replay from storage until caught up.
        loop {
            let store = alerts.clone();
            let batch =
                match tokio::task::spawn_blocking(move || store.events_after(last, REPLAY_BATCH))
                    .await
                {
                    Ok(Ok(batch)) => batch,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Err(_) => return,
                };
            if batch.is_empty() {
                break;
            }
            for e in batch {
                let cursor = e.cursor;
                // A watcher that hangs up is normal: stop quietly.
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
                last = cursor;
            }
        }
        // Live, until the watcher lags or a gap shows.
        loop {
            match live.recv().await {
                Ok(e) if e.cursor <= last => continue,
                Ok(e) if e.cursor == last + 1 => {
                    let cursor = e.cursor;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                    last = cursor;
                }
                // A gap (an event was committed between the replay and the
                // subscription's buffer): read storage again.
                Ok(_) => {
                    live = live.resubscribe();
                    break;
                }
                // Fell behind the live buffer: read storage again.
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(
                        skipped,
                        last,
                        "watcher fell behind: re-reading stored events"
                    );
                    metrics.watcher_lagged();
                    live = live.resubscribe();
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
