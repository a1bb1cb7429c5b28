//! `tally.v1.Alerts`: list, read, act on and watch discrepancy alerts. Each
//! RPC decodes its request, calls its operation in `coordinator::ops` and
//! encodes the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{blocking, caller_of, run_detached, within_page_bytes};
use crate::coordinator::ops::{
    AlertFilter, AlertQuery, Decoded, Ops, RequestError, page_token, parse_page_token,
};
use crate::coordinator::storage::alerts::ResolutionReason;
use crate::proto;
use tally_wire::alerts::{
    alert_to_proto, event_to_proto, reason_choices, reason_from_proto, status_from_proto,
};

pub(crate) struct AlertsService {
    /// Every RPC: permission, request, work (and audit record).
    ops: Arc<Ops>,
}

impl AlertsService {
    pub fn new(ops: Arc<Ops>) -> AlertsService {
        AlertsService { ops }
    }
}

/// Adds the alert id to the RPC's span.
fn record_alert_id(id: u64) {
    tracing::Span::current().record("alert_id", id);
}

fn decode_reason(code: i32) -> Decoded<ResolutionReason> {
    reason_from_proto(code).ok_or_else(|| RequestError::UnknownResolutionReason {
        code,
        valid: reason_choices(),
    })
}

/// A list request's filter (kind, state, model, status, in that order),
/// page size and position.
fn decode_query(r: &proto::ListAlertsRequest, ops: &Ops) -> Decoded<AlertQuery> {
    let mut filter = AlertFilter::parse(&r.kind, &r.state, &r.model, ops.rule())?;
    let status = proto::AlertStatus::try_from(r.status)
        .map_err(|_| RequestError::UnknownAlertStatus(r.status))?;
    filter.status = status_from_proto(status);
    filter.opened_since = r.opened_since_unix_ms;
    Ok(AlertQuery {
        filter,
        page_size: r.page_size as usize,
        before: parse_page_token(&r.page_token)?,
    })
}

#[tonic::async_trait]
impl proto::alerts_server::Alerts for AlertsService {
    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let caller = caller_of(&request);
        let query = decode_query(request.get_ref(), &self.ops);
        let ops = self.ops.clone();
        let found = blocking(move || Ok(ops.list_alerts(&caller, query)?)).await?;
        let (alerts, cut) = within_page_bytes(found.alerts.iter().map(alert_to_proto));
        let next_page_token = match (found.more || cut, alerts.last()) {
            (true, Some(last)) => page_token(last.id),
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
        let caller = caller_of(&request);
        let id = request.into_inner().id;
        record_alert_id(id);
        let ops = self.ops.clone();
        let alert = blocking(move || Ok(ops.get_alert(&caller, id)?)).await?;
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
        let reason = decode_reason(req.reason);
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
        let caller = caller_of(&request);
        let after = request.into_inner().after_cursor;
        tracing::Span::current().record("after_cursor", after);
        let ops = self.ops.clone();
        let watch = blocking(move || Ok(ops.watch_alerts(&caller, after)?)).await?;
        let events = watch.start().map(|event| match event {
            Ok(e) => Ok(event_to_proto(&e)),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proto::alerts_server::Alerts;

    use super::*;
    use crate::audit::Action;
    use crate::coordinator::storage::alerts::{AlertStatus, AlertStore};
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
            crate::coordinator::storage::AuditLog::open(
                Arc::new(crate::coordinator::storage::SledAuditTrail::open(&db).unwrap()),
                ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
            )
            .unwrap(),
        );
        let ops = crate::coordinator::ops::tests::ops_on(
            crate::access::AccessPolicy::open(),
            reconciler,
            audit.clone(),
        );
        let service = AlertsService::new(Arc::new(ops));

        // Polled once, up to its first wait for storage, then dropped (what
        // tonic does when the client goes away). The principal is what the
        // access layer attaches.
        let mut request = Request::new(proto::AcknowledgeAlertRequest {
            id,
            note: "seen".into(),
        });
        request
            .extensions_mut()
            .insert(crate::access::Principal::Unchecked);
        let mut handler = Box::pin(service.acknowledge_alert(request));
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
