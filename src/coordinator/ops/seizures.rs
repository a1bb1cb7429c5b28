//! Seizure reports: checking the reported items, storing the report and
//! matching its items (operator), listing the reports (auditor).

use super::request::{RequestError, SeizedItemError};
use super::{Caller, Ops, OpsError};
use crate::access::Operation;
use crate::audit::Action;
use crate::coordinator::reconciler::ReconcileError;
use crate::reconcile::{AlertKey, AlertKind, Custody, Seizure};
use crate::seizure::{RawSeizure, SeizureMatch, SeizureReceipt, SeizureReport};
use crate::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};

/// Largest number of items in one seizure report.
pub(crate) const MAX_SEIZED_ITEMS: usize = 10_000;

/// How far a seizure time may be ahead of the coordinator's clock: clocks
/// of the reporting office and the coordinator differ a little.
const MAX_SEIZURE_CLOCK_SKEW_MS: i64 = 60 * 60 * 1000;

/// Most seizure reports in one `ListSeizureReports` page.
const MAX_REPORTS_PER_PAGE: usize = 100;
/// Stored size after which a `ListSeizureReports` page ends: well inside a
/// client's default 4 MiB message limit.
const REPORT_PAGE_BYTES: usize = 1 << 20;

/// A page of stored reports, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct ReportPage {
    pub reports: Vec<SeizureReport>,
    /// More reports follow the last one.
    pub more: bool,
}

fn check(
    i: usize,
    item: &RawSeizure,
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

impl Ops {
    /// Records a seizure report and matches its items with their alerts and
    /// custody (operator).
    pub fn report_seizures(
        &self,
        caller: &Caller,
        items: &[RawSeizure],
    ) -> Result<SeizureReceipt, OpsError> {
        self.permit(caller, Operation::ReportSeizures)?;
        let (report_id, result) = self.report(items);
        let action = Action::ReportSeizures {
            items: items.len() as u64,
            report_id,
        };
        self.audited(caller, action, result)
    }

    /// The stored reports after id `after_id`, at most `limit` (0: 100; at
    /// most 100) and at most about 1 MiB of them (auditor).
    pub fn list_seizure_reports(
        &self,
        caller: &Caller,
        after_id: u64,
        limit: usize,
    ) -> Result<ReportPage, OpsError> {
        self.permit(caller, Operation::ListSeizureReports)?;
        let limit = match limit {
            0 => MAX_REPORTS_PER_PAGE,
            n => n.min(MAX_REPORTS_PER_PAGE),
        };
        let (reports, more) =
            self.reconciler
                .seizure_log()
                .page_after(after_id, limit, REPORT_PAGE_BYTES)?;
        Ok(ReportPage { reports, more })
    }

    /// Checks, stores and matches a report. Returns the report's id whenever
    /// it was stored, also when matching failed afterwards, so that the
    /// audit record names it.
    fn report(&self, raw: &[RawSeizure]) -> (Option<u64>, Result<SeizureReceipt, OpsError>) {
        tracing::Span::current().record("items", raw.len());
        if raw.is_empty() {
            return (None, Err(RequestError::EmptySeizureReport.into()));
        }
        if raw.len() > MAX_SEIZED_ITEMS {
            let refused = RequestError::TooManySeizedItems {
                count: raw.len(),
                max: MAX_SEIZED_ITEMS,
            };
            return (None, Err(refused.into()));
        }
        let now = self.clock.now_unix_ms();
        let items = match raw
            .iter()
            .enumerate()
            .map(|(i, item)| check(i, item, &self.rule, now))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(items) => items,
            Err(refused) => return (None, Err(refused.into())),
        };
        let report = match self
            .reconciler
            .report_seizures(items, self.clock.now_unix_ms())
        {
            Ok(report) => report,
            Err(e) => return (None, Err(e.into())),
        };
        let report_id = report.id;
        tracing::info!(report_id, "seizure report recorded");
        let result = match self.match_seizures(&report.items) {
            Ok(matches) => Ok(SeizureReceipt { report_id, matches }),
            Err(source) => Err(OpsError::SeizuresUnmatched { report_id, source }),
        };
        (Some(report_id), result)
    }

    /// Each seized item's alert and custody, as they stand now.
    fn match_seizures(&self, items: &[Seizure]) -> Result<Vec<SeizureMatch>, ReconcileError> {
        let mut matches = Vec::with_capacity(items.len());
        for item in items {
            let key = AlertKey {
                kind: AlertKind::SeizedItem,
                item: Some(item.key.clone()),
                state: None,
                counterparty: None,
                sequence: None,
            };
            let alert = self.alerts().current(&key)?;
            let custody: Custody = self.reconciler.with_engine(|e| e.custody(&item.key))?;
            matches.push(SeizureMatch {
                key: ItemKey::clone(&item.key),
                alert_id: alert.map(|a| a.id),
                custody,
            });
        }
        Ok(matches)
    }
}
