//! Evidence bundles from trace responses: the one place a `TraceItemResponse`
//! becomes the offline-verifiable bundle of `tally_core::evidence`.

use sha2::{Digest, Sha256};
use tally_core::evidence::{
    BUNDLE_FORMAT, Bundle, BundleEntry, BundleError, BundleKey, EntryEvidence,
};

use crate::proto;

/// The bundle of a trace response: its key and every entry's evidence.
pub fn bundle_from_trace(response: &proto::TraceItemResponse) -> Result<Bundle, BundleError> {
    Ok(Bundle {
        format: BUNDLE_FORMAT.to_string(),
        key: BundleKey {
            model: response.model.clone(),
            serial: response.serial.clone(),
        },
        entries: response
            .entries
            .iter()
            .enumerate()
            .map(|(index, e)| bundle_entry_from_trace(index, e))
            .collect::<Result<_, _>>()?,
    })
}

/// The bundle form of one trace entry (`index` names it in errors).
pub fn bundle_entry_from_trace(
    index: usize,
    e: &proto::TraceEntry,
) -> Result<BundleEntry, BundleError> {
    let ev = e
        .evidence
        .as_ref()
        .ok_or(BundleError::MissingEvidence { index })?;
    Ok(BundleEntry {
        state: e.state.clone(),
        sequence: e.sequence,
        as_of_unix_ms: e.as_of_unix_ms,
        status: e.status.clone(),
        site: e.site.clone(),
        counterparty: e.counterparty.clone(),
        model: e.model.clone(),
        serial: e.serial.clone(),
        evidence: EntryEvidence {
            digest: hex::encode(Sha256::digest(&ev.header)),
            header: hex::encode(&ev.header),
            signature: hex::encode(&ev.signature),
            leaf: hex::encode(&ev.leaf),
            leaf_index: ev.leaf_index,
            tree_size: ev.tree_size,
            proof: ev.proof.iter().map(hex::encode).collect(),
        },
    })
}
