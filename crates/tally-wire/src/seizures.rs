//! Seizure reports on the wire: the items reported, the stored reports, and
//! each item's alert and custody.

use tally_core::reconcile::Seizure;
use tally_core::seizure::{RawSeizure, SeizureMatch, SeizureReceipt, SeizureReport};

use crate::alerts::custody_to_proto;
use crate::proto;

/// A reported item, unchecked (the coordinator checks it).
pub fn raw_seizure_from_proto(item: proto::SeizedItem) -> RawSeizure {
    RawSeizure {
        model: item.model,
        serial: item.serial,
        seized_at_unix_ms: item.seized_at_unix_ms,
        place: item.place,
        note: item.note,
    }
}

/// The wire form of a stored item, with its fields as reported.
pub fn seizure_to_proto(s: &Seizure) -> proto::SeizedItem {
    proto::SeizedItem {
        model: s.model.clone(),
        serial: s.serial.clone(),
        seized_at_unix_ms: s.seized_at_unix_ms,
        place: s.place.clone(),
        note: s.note.clone(),
    }
}

/// The wire form of a stored report.
pub fn report_to_proto(r: &SeizureReport) -> proto::SeizureReport {
    proto::SeizureReport {
        id: r.id,
        reported_at_unix_ms: r.reported_at_unix_ms,
        items: r.items.iter().map(seizure_to_proto).collect(),
    }
}

/// The wire form of one item's match (alert id 0: no alert).
pub fn match_to_proto(m: &SeizureMatch) -> proto::SeizureMatch {
    proto::SeizureMatch {
        model: m.key.model.to_string(),
        serial: m.key.serial.to_string(),
        alert_id: m.alert_id.unwrap_or(0),
        custody: Some(custody_to_proto(&m.custody)),
    }
}

/// The answer to a stored report.
pub fn receipt_to_proto(r: &SeizureReceipt) -> proto::ReportSeizuresResponse {
    proto::ReportSeizuresResponse {
        report_id: r.report_id,
        matches: r.matches.iter().map(match_to_proto).collect(),
    }
}
