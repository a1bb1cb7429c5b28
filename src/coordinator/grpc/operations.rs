//! `tally.v1.Seizures` and `tally.v1.Coordinator`: seizure reports and status.
//! Each RPC decodes its request, calls its operation in `coordinator::ops`
//! and encodes the answer.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{blocking, caller_of, run_detached};
use crate::coordinator::ops::Ops;
use crate::proto;
use crate::seizure::RawSeizure;
use tally_wire::seizures::{raw_seizure_from_proto, receipt_to_proto, report_to_proto};
use tally_wire::status::status_to_proto;

pub(crate) struct SeizuresService {
    /// Reports: permission, checks, storage, audit record; and the list.
    ops: Arc<Ops>,
}

impl SeizuresService {
    pub fn new(ops: Arc<Ops>) -> SeizuresService {
        SeizuresService { ops }
    }
}

#[tonic::async_trait]
impl proto::seizures_server::Seizures for SeizuresService {
    async fn report_seizures(
        &self,
        request: Request<proto::ReportSeizuresRequest>,
    ) -> Result<Response<proto::ReportSeizuresResponse>, Status> {
        let caller = caller_of(&request);
        let items: Vec<RawSeizure> = request
            .into_inner()
            .items
            .into_iter()
            .map(raw_seizure_from_proto)
            .collect();
        let ops = self.ops.clone();
        let receipt =
            run_detached(blocking(move || Ok(ops.report_seizures(&caller, &items)?))).await?;
        Ok(Response::new(receipt_to_proto(&receipt)))
    }

    async fn list_seizure_reports(
        &self,
        request: Request<proto::ListSeizureReportsRequest>,
    ) -> Result<Response<proto::ListSeizureReportsResponse>, Status> {
        let caller = caller_of(&request);
        let req = request.into_inner();
        let ops = self.ops.clone();
        let page = blocking(move || {
            Ok(ops.list_seizure_reports(&caller, req.after_id, req.limit as usize)?)
        })
        .await?;
        Ok(Response::new(proto::ListSeizureReportsResponse {
            reports: page.reports.iter().map(report_to_proto).collect(),
            more: page.more,
        }))
    }
}

pub(crate) struct CoordinatorService {
    ops: Arc<Ops>,
}

impl CoordinatorService {
    pub fn new(ops: Arc<Ops>) -> CoordinatorService {
        CoordinatorService { ops }
    }
}

#[tonic::async_trait]
impl proto::coordinator_server::Coordinator for CoordinatorService {
    async fn get_status(
        &self,
        request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::CoordinatorStatus>, Status> {
        let caller = caller_of(&request);
        let ops = self.ops.clone();
        let status = blocking(move || Ok(ops.get_status(&caller)?)).await?;
        Ok(Response::new(status_to_proto(&status)))
    }
}
