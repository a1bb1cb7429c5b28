//! `tally.v1.Alerts`: list, read, act on and watch discrepancy alerts.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::check_field_len;
use super::request::RequestError;
use super::{blocking, run_detached, within_page_bytes};
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::metrics::Metrics;
use crate::coordinator::ops::Ops;
use crate::coordinator::storage::alerts::{Alert, AlertStatus, AlertStore, ResolutionReason};
use crate::proto;
use crate::reconcile::AlertKind;
use crate::serial::{CanonicalModel, CanonicalRule};
use crate::state::StateCode;
use tally_wire::alerts::{alert_to_proto, event_to_proto, reason_from_proto, status_from_proto};

/// Default and largest page of `ListAlerts`.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;
/// Stored events read per step when a watcher replays.
const REPLAY_BATCH: usize = 500;
/// Events queued for one watcher's connection before it counts as slow.
const WATCH_QUEUE: usize = 256;

pub(crate) struct AlertsService {
    alerts: Arc<AlertStore>,
    rule: CanonicalRule,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    /// Acknowledge, resolve and reopen: permission, action, audit record.
    ops: Ops,
}

impl AlertsService {
    pub fn new(
        alerts: Arc<AlertStore>,
        rule: CanonicalRule,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
        ops: Ops,
    ) -> AlertsService {
        AlertsService {
            alerts,
            rule,
            lifecycle,
            metrics,
            ops,
        }
    }
}

/// Who made a request, and from where, for the operations.
pub(super) fn caller_of<T>(request: &Request<T>) -> crate::coordinator::ops::Caller {
    crate::coordinator::ops::Caller {
        principal: request
            .extensions()
            .get::<crate::access::Principal>()
            .cloned(),
        peer: request.remote_addr(),
    }
}

/// Adds the alert id to the RPC's span.
fn record_alert_id(id: u64) {
    tracing::Span::current().record("alert_id", id);
}

fn reason_from_proto_checked(code: i32) -> Result<ResolutionReason, RequestError> {
    reason_from_proto(code).ok_or(RequestError::UnknownResolutionReason { code })
}

/// The validated filters of a list request.
struct Filter {
    kind: Option<AlertKind>,
    state: Option<StateCode>,
    model: Option<CanonicalModel>,
    status: Option<AlertStatus>,
    opened_since: i64,
}

impl Filter {
    fn from_request(
        r: &proto::ListAlertsRequest,
        rule: &CanonicalRule,
    ) -> Result<Filter, RequestError> {
        let kind = match r.kind.as_str() {
            "" => None,
            k => Some(
                AlertKind::ALL
                    .into_iter()
                    .find(|x| x.as_str() == k)
                    .ok_or_else(|| RequestError::UnknownAlertKind(k.to_string()))?,
            ),
        };
        let state = match r.state.as_str() {
            "" => None,
            s => Some(StateCode::parse(s)?),
        };
        let model = match r.model.as_str() {
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
        let status = proto::AlertStatus::try_from(r.status)
            .map_err(|_| RequestError::UnknownAlertStatus(r.status))?;
        Ok(Filter {
            kind,
            state,
            model,
            status: status_from_proto(status),
            opened_since: r.opened_since_unix_ms,
        })
    }

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

#[tonic::async_trait]
impl proto::alerts_server::Alerts for AlertsService {
    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let req = request.into_inner();
        let filter = Filter::from_request(&req, &self.rule)?;
        let page = match req.page_size as usize {
            0 => PAGE_DEFAULT,
            n => n.min(PAGE_MAX),
        };
        // Newest first; the token is the id to continue below.
        let before = match req.page_token.as_str() {
            "" => u64::MAX,
            t => t
                .parse::<u64>()
                .map_err(|_| RequestError::UnknownPageToken(t.to_string()))?,
        };
        let alerts = self.alerts.clone();
        let (found, more) = blocking(move || {
            let (found, more) = alerts.page_before(before, page, |a| filter.matches(a))?;
            Ok((found, more))
        })
        .await?;
        let (alerts, cut) = within_page_bytes(found.iter().map(alert_to_proto));
        let next_page_token = match (more || cut, alerts.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListAlertsResponse {
            alerts,
            next_page_token,
        }))
    }

    async fn get_alert(
        &self,
        request: Request<proto::GetAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let id = request.into_inner().id;
        record_alert_id(id);
        let alerts = self.alerts.clone();
        let alert = blocking(move || Ok(alerts.get(id)?)).await?;
        let alert = alert.ok_or(RequestError::NoAlert(id))?;
        Ok(Response::new(alert_to_proto(&alert)))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<proto::AcknowledgeAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let caller = caller_of(&request);
        let req = request.into_inner();
        record_alert_id(req.id);
        let ops = self.ops.clone();
        let alert = run_detached(blocking(move || {
            Ok(ops.acknowledge_alert(&caller, req.id, &req.note)?)
        }))
        .await?;
        tracing::info!("alert acknowledged");
        Ok(Response::new(alert_to_proto(&alert)))
    }

    async fn resolve_alert(
        &self,
        request: Request<proto::ResolveAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let caller = caller_of(&request);
        let req = request.into_inner();
        record_alert_id(req.id);
        let reason = reason_from_proto_checked(req.reason);
        let ops = self.ops.clone();
        let alert = run_detached(blocking(move || {
            Ok(ops.resolve_alert(&caller, req.id, reason, &req.note)?)
        }))
        .await?;
        tracing::info!("alert resolved");
        Ok(Response::new(alert_to_proto(&alert)))
    }

    async fn reopen_alert(
        &self,
        request: Request<proto::ReopenAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let caller = caller_of(&request);
        let req = request.into_inner();
        record_alert_id(req.id);
        let ops = self.ops.clone();
        let alert = run_detached(blocking(move || {
            Ok(ops.reopen_alert(&caller, req.id, &req.note)?)
        }))
        .await?;
        tracing::info!("alert reopened");
        Ok(Response::new(alert_to_proto(&alert)))
    }

    type WatchAlertsStream = Pin<Box<dyn Stream<Item = Result<proto::AlertEvent, Status>> + Send>>;

    async fn watch_alerts(
        &self,
        request: Request<proto::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let after = request.into_inner().after_cursor;
        tracing::Span::current().record("after_cursor", after);
        if self.lifecycle.is_draining() {
            return Err(RequestError::WatchShuttingDown.into());
        }
        // A cursor beyond the newest event would skip events silently until
        // the store caught up with it: it comes from another coordinator, or
        // from before the alert store was rebuilt (cursors start again then).
        let mut newest = self.alerts.last_cursor();
        if after > newest {
            // Storage may be a moment ahead of the count (see
            // `AlertStore::last_cursor`): ask it before refusing.
            let alerts = self.alerts.clone();
            newest = blocking(move || Ok(alerts.last_stored_cursor()?)).await?;
        }
        if after > newest {
            return Err(RequestError::CursorAhead { after, newest }.into());
        }
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let watcher = self.metrics.watcher_connected();
        let lifecycle = self.lifecycle.clone();
        let alerts = self.alerts.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(
            async move {
                // Counted as connected until this task ends.
                let _watcher = watcher;
                tokio::select! {
                    _ = watch(alerts, &metrics, after, &tx) => {}
                    // Noticed at once, not at the next event: the gauge of
                    // connected watchers stays true.
                    _ = tx.closed() => tracing::debug!("watcher hung up"),
                    // Dropping `tx` ends the stream cleanly (status OK); the
                    // watcher resumes from its last cursor.
                    _ = lifecycle.draining() => tracing::info!("watch stream ended: shutting down"),
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Feeds one watcher: stored events after its cursor, then live ones. The
/// live subscription starts before the replay, so nothing committed in
/// between is missed; events at or below the last one sent are skipped, so
/// nothing is sent twice. A watcher that falls behind the live buffer goes
/// back to reading storage from its last cursor (counted in `metrics`):
/// memory stays bounded and ingestion never waits for it.
async fn watch(
    alerts: Arc<AlertStore>,
    metrics: &Metrics,
    mut last: u64,
    tx: &mpsc::Sender<Result<proto::AlertEvent, Status>>,
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
            for e in &batch {
                // A watcher that hangs up is normal: stop quietly.
                if tx.send(Ok(event_to_proto(e))).await.is_err() {
                    return;
                }
                last = e.cursor;
            }
        }
        // Live, until the watcher lags or a gap shows.
        loop {
            match live.recv().await {
                Ok(e) if e.cursor <= last => continue,
                Ok(e) if e.cursor == last + 1 => {
                    if tx.send(Ok(event_to_proto(&e))).await.is_err() {
                        return;
                    }
                    last = e.cursor;
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proto::alerts_server::Alerts;

    use super::*;
    use crate::audit::Action;
    use crate::coordinator::storage::audit_log::AuditStore;

    /// A client that stops waiting (hangs up, or its deadline passes) once
    /// its acknowledgement is under way: tonic drops the handler there. The
    /// acknowledgement still takes effect, so it must still be audited.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_action_whose_caller_stops_waiting_is_still_audited() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let alerts = Arc::new(AlertStore::open(&db).unwrap());
        // Opened on an empty store, before the alert below exists (a
        // rebuild would clear it).
        let reconciler = Arc::new(
            crate::coordinator::reconciler::Reconciler::open(
                Arc::new(crate::coordinator::storage::memory::MemoryStore::new()),
                alerts.clone(),
                Arc::new(crate::coordinator::storage::memory::MemorySeizureStore::new()),
                crate::reconcile::EngineConfig::default(),
                0,
                None,
            )
            .unwrap(),
        );
        let opened = crate::coordinator::storage::alerts::tests::conflict_opened();
        let id = alerts.apply(&[opened], 1_000).unwrap()[0].alert_id;
        let audit = Arc::new(
            crate::coordinator::storage::SledAuditLog::open(
                &db,
                ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
            )
            .unwrap(),
        );
        let ops = Ops::new(
            Arc::new(crate::access::AccessPolicy::open()),
            reconciler,
            audit.clone(),
            crate::support::clock::Clock::system(),
            CanonicalRule::default(),
        );
        let service = AlertsService::new(
            alerts.clone(),
            CanonicalRule::default(),
            Lifecycle::new(),
            Arc::new(Metrics::new()),
            ops,
        );

        // Polled once, up to its first wait for storage, then dropped (what
        // tonic does when the client goes away).
        let mut handler = Box::pin(service.acknowledge_alert(Request::new(
            proto::AcknowledgeAlertRequest {
                id,
                note: "seen".into(),
            },
        )));
        let _ = futures::poll!(handler.as_mut());
        drop(handler);

        let deadline = Instant::now() + Duration::from_secs(10);
        while audit.last_sequence() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = alerts.get(id).unwrap().map(|a| a.status);
        let records: Vec<Action> = audit
            .list(1, 10)
            .unwrap()
            .iter()
            .map(|r| r.decode().unwrap().event.action)
            .collect();
        assert_eq!(
            (status, records),
            (
                Some(AlertStatus::Acknowledged),
                vec![Action::AcknowledgeAlert { alert_id: id }]
            )
        );
    }
}
