//! Seizure reports: checking the reported items and storing the report.

use super::{Ops, OpsError};
use crate::coordinator::grpc::request::{RequestError, SeizedItemError};
use crate::reconcile::{Custody, Seizure};
use crate::serial::{CanonicalModel, CanonicalRule, CanonicalSerial, ItemKey};

/// Largest number of items in one seizure report.
pub(crate) const MAX_SEIZED_ITEMS: usize = 10_000;

/// How far a seizure time may be ahead of the coordinator's clock: clocks
/// of the reporting office and the coordinator differ a little.
const MAX_SEIZURE_CLOCK_SKEW_MS: i64 = 60 * 60 * 1000;

/// One seized item as reported, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct RawSeizure {
    pub model: String,
    pub serial: String,
    pub seized_at_unix_ms: i64,
    pub place: String,
    pub note: String,
}

/// A stored report: its id and each item's alert and custody.
#[derive(Debug, Clone)]
pub struct SeizureReceipt {
    pub report_id: u64,
    pub matches: Vec<SeizureMatch>,
}

/// One seized item's alert (if one is open for it) and custody.
#[derive(Debug, Clone)]
pub struct SeizureMatch {
    pub key: ItemKey,
    pub alert_id: Option<u64>,
    pub custody: Custody,
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
    /// Checks, stores and matches a report. Returns the report's id whenever
    /// it was stored, also when matching failed afterwards, so that the
    /// audit record names it.
    pub(super) fn report(
        &self,
        raw: &[RawSeizure],
    ) -> (Option<u64>, Result<SeizureReceipt, OpsError>) {
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
}
