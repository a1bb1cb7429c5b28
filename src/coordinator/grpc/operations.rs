//! `tally.v1.Seizures` and `tally.v1.Coordinator`: seizure reports and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, run_detached};
use crate::coordinator::admission::Ingestor;
use crate::coordinator::ops::{Ops, RawSeizure, SeizureMatch};
use crate::coordinator::reconciler::Reconciler;
use crate::proto;
use crate::reconcile::{AlertKind, Seizure};
use crate::state::StateCode;
use tally_wire::alerts::custody_to_proto;

/// Most seizure reports in one `ListSeizureReports` page.
const MAX_REPORTS_PER_PAGE: usize = 100;
/// Stored size after which a `ListSeizureReports` page ends: well inside a
/// client's default 4 MiB message limit.
const PAGE_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub(crate) struct SeizuresService {
    reconciler: Arc<Reconciler>,
    /// Reports: permission, checks, storage, audit record.
    ops: Ops,
}

impl SeizuresService {
    pub fn new(reconciler: Arc<Reconciler>, ops: Ops) -> SeizuresService {
        SeizuresService { reconciler, ops }
    }
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

fn raw_seizure(item: proto::SeizedItem) -> RawSeizure {
    RawSeizure {
        model: item.model,
        serial: item.serial,
        seized_at_unix_ms: item.seized_at_unix_ms,
        place: item.place,
        note: item.note,
    }
}

fn match_to_proto(m: &SeizureMatch) -> proto::SeizureMatch {
    proto::SeizureMatch {
        model: m.key.model.to_string(),
        serial: m.key.serial.to_string(),
        alert_id: m.alert_id.unwrap_or(0),
        custody: Some(custody_to_proto(&m.custody)),
    }
}

#[tonic::async_trait]
impl proto::seizures_server::Seizures for SeizuresService {
    async fn report_seizures(
        &self,
        request: Request<proto::ReportSeizuresRequest>,
    ) -> Result<Response<proto::ReportSeizuresResponse>, Status> {
        let caller = super::alerts::caller_of(&request);
        let items: Vec<RawSeizure> = request
            .into_inner()
            .items
            .into_iter()
            .map(raw_seizure)
            .collect();
        let ops = self.ops.clone();
        let receipt =
            run_detached(blocking(move || Ok(ops.report_seizures(&caller, &items)?))).await?;
        Ok(Response::new(proto::ReportSeizuresResponse {
            report_id: receipt.report_id,
            matches: receipt.matches.iter().map(match_to_proto).collect(),
        }))
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

pub(crate) struct CoordinatorService {
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
