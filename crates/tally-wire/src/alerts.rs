//! Alerts on the wire: statuses, reasons, evidence, custody, alerts and
//! their events.

use tally_core::alert::{Alert, AlertEvent, AlertStatus, ResolutionReason};
use tally_core::reconcile::{Custody, Evidence, SnapshotRef};

use crate::convert::text_or_empty;
use crate::proto;

/// The wire code of an alert status.
pub fn alert_status_to_proto(s: AlertStatus) -> proto::AlertStatus {
    match s {
        AlertStatus::Open => proto::AlertStatus::Open,
        AlertStatus::Acknowledged => proto::AlertStatus::Acknowledged,
        AlertStatus::Resolved => proto::AlertStatus::Resolved,
        AlertStatus::Cleared => proto::AlertStatus::Cleared,
    }
}

/// The alert status a wire code names; `None` for unspecified (no filter).
pub fn status_from_proto(s: proto::AlertStatus) -> Option<AlertStatus> {
    match s {
        proto::AlertStatus::Unspecified => None,
        proto::AlertStatus::Open => Some(AlertStatus::Open),
        proto::AlertStatus::Acknowledged => Some(AlertStatus::Acknowledged),
        proto::AlertStatus::Resolved => Some(AlertStatus::Resolved),
        proto::AlertStatus::Cleared => Some(AlertStatus::Cleared),
    }
}

/// The wire code of a resolution reason.
pub fn reason_to_proto(r: ResolutionReason) -> proto::ResolutionReason {
    match r {
        ResolutionReason::FalsePositive => proto::ResolutionReason::FalsePositive,
        ResolutionReason::DataEntryError => proto::ResolutionReason::DataEntryError,
        ResolutionReason::Located => proto::ResolutionReason::Located,
        ResolutionReason::TransferConfirmed => proto::ResolutionReason::TransferConfirmed,
        ResolutionReason::WrittenOff => proto::ResolutionReason::WrittenOff,
        ResolutionReason::ReferredForInvestigation => {
            proto::ResolutionReason::ReferredForInvestigation
        }
    }
}

/// The resolution reason a wire code names; `None` for an unknown or
/// unspecified code.
pub fn reason_from_proto(code: i32) -> Option<ResolutionReason> {
    let r = proto::ResolutionReason::try_from(code).ok()?;
    ResolutionReason::ALL
        .into_iter()
        .find(|x| reason_to_proto(*x) == r)
}

/// Every resolution reason, named as a gRPC client writes it, with its
/// number and the CLI's spelling beside: what a refusal of an unknown reason
/// lists.
pub fn reason_choices() -> String {
    let valid: Vec<String> = ResolutionReason::ALL
        .iter()
        .map(|r| {
            let p = reason_to_proto(*r);
            format!("{} = {} ({})", p.as_str_name(), p as i32, r.as_str())
        })
        .collect();
    valid.join(", ")
}

/// The wire form of a snapshot reference.
pub fn snapshot_ref(r: &SnapshotRef) -> proto::SnapshotRef {
    proto::SnapshotRef {
        state: r.state.to_string(),
        sequence: r.sequence,
        digest: r.digest.0.to_vec().into(),
        as_of_unix_ms: r.as_of_unix_ms,
    }
}

/// The wire form of one evidence entry.
pub fn evidence(e: &Evidence) -> proto::Evidence {
    proto::Evidence {
        snapshot: Some(snapshot_ref(&e.snapshot)),
        role: e.role.clone(),
        lines: e
            .lines
            .iter()
            .map(|l| proto::ItemLine {
                model: l.model.clone(),
                serial: l.serial.clone(),
                status: l.status.to_string(),
                site: l.site.clone(),
                counterparty: text_or_empty(l.counterparty),
            })
            .collect(),
    }
}

/// The wire form of a custody trail.
pub fn custody_to_proto(c: &Custody) -> proto::Custody {
    match c {
        Custody::NeverReported => proto::Custody {
            never_reported: true,
            ..Default::default()
        },
        Custody::Known {
            custodians,
            last_custodian,
            last_status,
            last_listed_in,
            last_held_in,
            gone_in,
            absent_since,
            declared_to,
            held_now_by,
        } => proto::Custody {
            never_reported: false,
            last_custodian: last_custodian.to_string(),
            last_status: last_status.iter().map(|s| s.to_string()).collect(),
            last_held_in: last_held_in.as_ref().map(snapshot_ref),
            gone_in: gone_in.as_ref().map(snapshot_ref),
            held_now_by: held_now_by.iter().map(|s| s.to_string()).collect(),
            custodians: custodians.iter().map(|s| s.to_string()).collect(),
            last_listed_in: Some(snapshot_ref(last_listed_in)),
            absent_since: absent_since.as_ref().map(snapshot_ref),
            declared_to: declared_to.iter().map(|s| s.to_string()).collect(),
        },
    }
}

/// The wire form of an alert.
pub fn alert_to_proto(a: &Alert) -> proto::Alert {
    let severity = format!("{:?}", a.body.severity).to_lowercase();
    proto::Alert {
        id: a.id,
        kind: a.key.kind.to_string(),
        model: text_or_empty(a.key.item.as_ref().map(|k| &k.model)),
        serial: text_or_empty(a.key.item.as_ref().map(|k| &k.serial)),
        state: text_or_empty(a.key.state),
        counterparty: text_or_empty(a.key.counterparty),
        sequence: a.key.sequence.unwrap_or_default(),
        status: alert_status_to_proto(a.status) as i32,
        severity,
        spellings: a.body.spellings.clone(),
        states: a.body.states.iter().map(|s| s.to_string()).collect(),
        summary: a.body.summary.clone(),
        evidence: a.body.evidence.iter().map(evidence).collect(),
        opened_at_unix_ms: a.opened_at_unix_ms,
        updated_at_unix_ms: a.updated_at_unix_ms,
        previous_occurrence: a.previous_occurrence.unwrap_or_default(),
        history: a
            .history
            .iter()
            .map(|h| proto::HistoryEntry {
                cursor: h.cursor,
                at_unix_ms: h.at_unix_ms,
                action: h.action.as_str().to_string(),
                by: h.by.as_ref().map(snapshot_ref),
                note: h.note.clone(),
                reason: h.reason.map_or(0, |r| reason_to_proto(r) as i32),
            })
            .collect(),
        custody: a.body.custody.as_deref().map(custody_to_proto),
    }
}

/// The wire form of an alert event.
pub fn event_to_proto(e: &AlertEvent) -> proto::AlertEvent {
    proto::AlertEvent {
        cursor: e.cursor,
        alert_id: e.alert_id,
        action: e.kind.as_str().to_string(),
        at_unix_ms: e.at_unix_ms,
        kind: e.key.kind.to_string(),
        status: alert_status_to_proto(e.status) as i32,
        summary: e.key.to_string(),
    }
}
