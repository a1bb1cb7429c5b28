//! Trails on the wire: the `TraceItem` answer (every entry with its
//! evidence, the key's alerts and its custody).

use tally_core::alert::Alert;
use tally_core::trail::{Trail, TrailEntry};

use crate::alerts::{alert_status_to_proto, custody_to_proto};
use crate::convert::text_or_empty;
use crate::proto;

/// The wire form of a trail.
pub fn trail_to_proto(trail: &Trail) -> proto::TraceItemResponse {
    proto::TraceItemResponse {
        model: trail.key.model.to_string(),
        serial: trail.key.serial.to_string(),
        entries: trail.entries.iter().map(entry_to_proto).collect(),
        alerts: trail.alerts.iter().map(trace_alert_to_proto).collect(),
        custody: Some(custody_to_proto(&trail.custody)),
    }
}

/// The wire form of one entry: the row, and the signed bytes that prove it
/// (read back by [`crate::evidence::bundle_entry_from_trace`]).
pub fn entry_to_proto(e: &TrailEntry) -> proto::TraceEntry {
    let h = &e.signed.header;
    proto::TraceEntry {
        state: h.state.to_string(),
        sequence: h.sequence,
        as_of_unix_ms: h.as_of_unix_ms,
        status: e.line.status.to_string(),
        site: e.line.site.clone(),
        counterparty: text_or_empty(e.line.counterparty),
        model: e.line.model.clone(),
        serial: e.line.serial.clone(),
        evidence: Some(proto::ItemEvidence {
            header: h.encode().to_vec().into(),
            signature: e.signed.signature.to_bytes().to_vec().into(),
            leaf: e.leaf.clone().into(),
            leaf_index: e.proof.leaf_index,
            tree_size: e.proof.tree_size,
            proof: e.proof.path.iter().map(|p| p.to_vec().into()).collect(),
        }),
    }
}

/// The short form of an alert about the traced key.
pub fn trace_alert_to_proto(a: &Alert) -> proto::TraceAlert {
    proto::TraceAlert {
        id: a.id,
        kind: a.key.kind.to_string(),
        status: alert_status_to_proto(a.status) as i32,
        state: text_or_empty(a.key.state),
        counterparty: text_or_empty(a.key.counterparty),
        summary: a.body.summary.clone(),
    }
}
