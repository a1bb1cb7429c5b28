//! Audit records on the wire: the sealed bytes (what `tally audit verify`
//! checks) and, beside them, their decoded fields for reading.

use tally_core::audit::{Outcome, SealedRecord};

use crate::proto;

/// The wire form of a stored record. The readable fields are left empty if
/// the encoding does not decode (verification then names the record).
pub fn record_to_proto(r: &SealedRecord) -> proto::AuditRecord {
    let mut out = proto::AuditRecord {
        sequence: r.sequence,
        encoding: r.encoding.clone().into(),
        hash: r.hash.clone().into(),
        signature: r.signature.clone().into(),
        ..Default::default()
    };
    if let Ok(d) = r.decode() {
        let e = d.event;
        out.at_unix_ms = e.at_unix_ms;
        out.actor = e.actor.to_string();
        out.peer = e.peer.unwrap_or_default();
        out.action = e.action.kind().to_string();
        out.description = e.action.to_string();
        out.outcome = e.outcome.code_name().to_string();
        if let Outcome::Refused { reason, .. } = e.outcome {
            out.reason = reason;
        }
    }
    out
}

/// The stored form of a record received over the wire (for verification).
pub fn record_from_proto(r: &proto::AuditRecord) -> SealedRecord {
    SealedRecord {
        sequence: r.sequence,
        encoding: r.encoding.to_vec(),
        hash: r.hash.to_vec(),
        signature: r.signature.to_vec(),
    }
}
