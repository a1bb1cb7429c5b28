//! `tally.v1.Seizures` and `tally.v1.Coordinator`: seizure reports and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::audit::{Caller, audited};
use super::request::{RequestError, SeizedItemError};
use super::status::EdgeFailure;
use super::{blocking, run_detached};
use crate::audit::Action;
use crate::coordinator::admission::Ingestor;
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::audit_log::AuditStore;
use crate::proto;
use crate::reconcile::{AlertKey, AlertKind, Seizure};
use crate::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};
use crate::state::StateCode;
use crate::support::clock::Clock;
use tally_wire::alerts::custody_to_proto;

/// Largest number of items in one seizure report.
const MAX_SEIZED_ITEMS: usize = 10_000;
/// Most seizure reports in one `ListSeizureReports` page.
const MAX_REPORTS_PER_PAGE: usize = 100;
/// Stored size after which a `ListSeizureReports` page ends: well inside a
/// client's default 4 MiB message limit.
const PAGE_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct SeizuresService {
    reconciler: Arc<Reconciler>,
    rule: CanonicalRule,
    /// Every seizure report, accepted or refused, is recorded here.
    audit: Arc<dyn AuditStore>,
    /// The time of every report and its record.
    clock: Clock,
}

impl SeizuresService {
    pub fn new(
        reconciler: Arc<Reconciler>,
        rule: CanonicalRule,
        audit: Arc<dyn AuditStore>,
        clock: Clock,
    ) -> SeizuresService {
        SeizuresService {
            reconciler,
            rule,
            audit,
            clock,
        }
    }
}

/// How far a seizure time may be ahead of the coordinator's clock: clocks
/// of the reporting office and the coordinator differ a little.
const MAX_SEIZURE_CLOCK_SKEW_MS: i64 = 60 * 60 * 1000;

fn seizure_from_proto(
    i: usize,
    item: &proto::SeizedItem,
    rule: &CanonicalRule,
    now_unix_ms: i64,
) -> Result<Seizure, RequestError> {
    let bad = |problem| RequestError::SeizedItem { index: i, problem };
    for (field, value, max) in [
        ("model", &item.model, crate::item::MAX_FIELD_BYTES),
        ("serial", &item.serial, crate::item::MAX_FIELD_BYTES),
        ("place", &item.place, crate::item::MAX_FIELD_BYTES),
        (
            "note",
            &item.note,
            crate::coordinator::storage::alerts::MAX_NOTE_BYTES,
        ),
    ] {
        if value.len() > max {
            return Err(bad(SeizedItemError::FieldTooLong {
                field,
                len: value.len(),
                max,
            }));
        }
    }
    // The time is evidence shown beside the custody trace: an unset (0) or
    // impossible one would mislead whoever reads it.
    let at = item.seized_at_unix_ms;
    if at <= 0 {
        return Err(bad(SeizedItemError::TimeUnset { at }));
    }
    if at > now_unix_ms + MAX_SEIZURE_CLOCK_SKEW_MS {
        return Err(bad(SeizedItemError::TimeInFuture {
            at,
            now: now_unix_ms,
        }));
    }
    let not_canonical = |field, value: &String, error| {
        bad(SeizedItemError::NotCanonical {
            field,
            value: value.clone(),
            error,
        })
    };
    let key = ItemKey {
        model: CanonicalModel::from_raw(&item.model, rule)
            .map_err(|e| not_canonical("model", &item.model, e))?,
        serial: CanonicalSerial::from_raw(&item.serial, rule)
            .map_err(|e| not_canonical("serial", &item.serial, e))?,
    };
    Ok(Seizure {
        key,
        model: item.model.clone(),
        serial: item.serial.clone(),
        seized_at_unix_ms: item.seized_at_unix_ms,
        place: item.place.clone(),
        note: item.note.clone(),
    })
}

fn seizure_to_proto(s: &Seizure) -> proto::SeizedItem {
    proto::SeizedItem {
        model: s.model.clone(),
        serial: s.serial.clone(),
        seized_at_unix_ms: s.seized_at_unix_ms,
        place: s.place.clone(),
        note: s.note.clone(),
    }
}

impl SeizuresService {
    /// Records a seizure report and matches its items. Returns the report's
    /// id whenever it was stored, also when matching failed afterwards, so
    /// that the audit record names it.
    async fn report(
        &self,
        req: proto::ReportSeizuresRequest,
    ) -> (Option<u64>, Result<proto::ReportSeizuresResponse, Status>) {
        tracing::Span::current().record("items", req.items.len());
        if req.items.is_empty() {
            return (None, Err(RequestError::EmptySeizureReport.into()));
        }
        if req.items.len() > MAX_SEIZED_ITEMS {
            let refused = RequestError::TooManySeizedItems {
                count: req.items.len(),
                max: MAX_SEIZED_ITEMS,
            };
            return (None, Err(refused.into()));
        }
        let now = self.clock.now_unix_ms();
        let items = match req
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| seizure_from_proto(i, item, &self.rule, now))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(items) => items,
            Err(refused) => return (None, Err(refused.into())),
        };
        let reconciler = self.reconciler.clone();
        let clock = self.clock.clone();
        let stored = blocking(move || {
            let report = reconciler.report_seizures(items, clock.now_unix_ms())?;
            let matches = match_seizures(&reconciler, &report.items);
            Ok((report.id, matches))
        })
        .await;
        match stored {
            Ok((report_id, matches)) => {
                tracing::info!(report_id, "seizure report recorded");
                let response = match matches {
                    Ok(matches) => Ok(proto::ReportSeizuresResponse { report_id, matches }),
                    Err(source) => Err(EdgeFailure::SeizuresUnmatched { report_id, source }.into()),
                };
                (Some(report_id), response)
            }
            Err(status) => (None, Err(status)),
        }
    }
}

/// Each seized item's alert and custody, as they stand now.
fn match_seizures(
    reconciler: &Reconciler,
    items: &[Seizure],
) -> Result<Vec<proto::SeizureMatch>, ReconcileError> {
    let mut matches = Vec::with_capacity(items.len());
    for item in items {
        let key = AlertKey {
            kind: AlertKind::SeizedItem,
            item: Some(item.key.clone()),
            state: None,
            counterparty: None,
            sequence: None,
        };
        let alert = reconciler.alerts().current(&key)?;
        let custody = reconciler.with_engine(|e| e.custody(&item.key))?;
        matches.push(proto::SeizureMatch {
            model: item.key.model.to_string(),
            serial: item.key.serial.to_string(),
            alert_id: alert.map_or(0, |a| a.id),
            custody: Some(custody_to_proto(&custody)),
        });
    }
    Ok(matches)
}

#[tonic::async_trait]
impl proto::seizures_server::Seizures for SeizuresService {
    async fn report_seizures(
        &self,
        request: Request<proto::ReportSeizuresRequest>,
    ) -> Result<Response<proto::ReportSeizuresResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let items = req.items.len() as u64;
        let service = self.clone();
        run_detached(async move {
            let (report_id, result) = service.report(req).await;
            let action = Action::ReportSeizures { items, report_id };
            audited(&service.audit, &service.clock, caller, action, result).await
        })
        .await
        .map(Response::new)
    }

    async fn list_seizure_reports(
        &self,
        request: Request<proto::ListSeizureReportsRequest>,
    ) -> Result<Response<proto::ListSeizureReportsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => MAX_REPORTS_PER_PAGE,
            n => (n as usize).min(MAX_REPORTS_PER_PAGE),
        };
        let reconciler = self.reconciler.clone();
        let (reports, more) = blocking(move || {
            Ok(reconciler
                .seizure_log()
                .page_after(req.after_id, limit, PAGE_BYTES)?)
        })
        .await?;
        Ok(Response::new(proto::ListSeizureReportsResponse {
            reports: reports
                .iter()
                .map(|r| proto::SeizureReport {
                    id: r.id,
                    reported_at_unix_ms: r.reported_at_unix_ms,
                    items: r.items.iter().map(seizure_to_proto).collect(),
                })
                .collect(),
            more,
        }))
    }
}

pub struct CoordinatorService {
    ingestor: Ingestor,
    reconciler: Arc<Reconciler>,
}

impl CoordinatorService {
    pub fn new(ingestor: Ingestor, reconciler: Arc<Reconciler>) -> CoordinatorService {
        CoordinatorService {
            ingestor,
            reconciler,
        }
    }
}

#[tonic::async_trait]
impl proto::coordinator_server::Coordinator for CoordinatorService {
    async fn get_status(
        &self,
        _request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::CoordinatorStatus>, Status> {
        let ingestor = self.ingestor.clone();
        let reconciler = self.reconciler.clone();
        let status = blocking(move || {
            let current = reconciler.alerts().current_alerts()?;
            let mut by_kind: BTreeMap<AlertKind, u64> =
                AlertKind::ALL.iter().map(|k| (*k, 0)).collect();
            let mut overdue: Vec<StateCode> = Vec::new();
            for a in &current {
                *by_kind.entry(a.key.kind).or_default() += 1;
                if a.key.kind == AlertKind::SnapshotOverdue
                    && let Some(s) = a.key.state
                {
                    overdue.push(s);
                }
            }
            let mut states: Vec<StateCode> = ingestor.members().copied().collect();
            states.sort();
            let mut members = Vec::with_capacity(states.len());
            for state in states {
                let latest = ingestor.store().latest(state)?;
                members.push(proto::MemberStatus {
                    state: state.to_string(),
                    last_sequence: latest.as_ref().map_or(0, |l| l.signed.header.sequence),
                    last_as_of_unix_ms: latest
                        .as_ref()
                        .map_or(0, |l| l.signed.header.as_of_unix_ms),
                    last_accepted_at_unix_ms: latest
                        .as_ref()
                        .map_or(0, |l| l.receipt.accepted_at_unix_ms),
                    overdue: overdue.contains(&state),
                });
            }
            Ok(proto::CoordinatorStatus {
                members,
                open_alerts: by_kind
                    .into_iter()
                    .map(|(kind, open)| proto::AlertCount {
                        kind: kind.to_string(),
                        open,
                    })
                    .collect(),
                last_cursor: reconciler.alerts().last_cursor(),
            })
        })
        .await?;
        Ok(Response::new(status))
    }
}
