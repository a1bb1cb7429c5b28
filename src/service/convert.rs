//! Conversions between generated protobuf types and domain types.

use ed25519_dalek::Signature;
use tonic::Status;

use crate::proto;
use crate::snapshot::{Receipt, SignedHeader, SnapshotDigest, SnapshotHeader};
use crate::state::StateCode;
use crate::store::StoredSnapshot;

/// An optional field's wire form: proto3 strings are empty when absent.
pub fn text_or_empty(value: Option<impl ToString>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn bytes32(field: &str, b: &[u8]) -> Result<[u8; 32], Status> {
    b.try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "malformed snapshot header: {field} must be 32 bytes, got {}",
            b.len()
        ))
    })
}

/// The longest model or serial a query (`TraceItem`, the `ListAlerts` model
/// filter) may carry. Exports are held to [`crate::item::MAX_FIELD_BYTES`]
/// per raw field, but a query may spell the same canonical form longer
/// (full-width letters, separators), so it gets four times that: enough for
/// any real lookup, and a bound on what is canonicalised and echoed.
pub const MAX_QUERY_FIELD_BYTES: usize = 4 * crate::item::MAX_FIELD_BYTES;

/// INVALID_ARGUMENT if a query field is longer than [`MAX_QUERY_FIELD_BYTES`].
pub fn check_field_len(field: &str, value: &str) -> Result<(), Status> {
    let max = MAX_QUERY_FIELD_BYTES;
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes long; at most {max} bytes are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// Decodes a header message into a signed header (structure only; the
/// signature is checked by the ingestor).
pub fn signed_header_from_proto(h: &proto::SnapshotHeader) -> Result<SignedHeader, Status> {
    let state = StateCode::parse(&h.state)
        .map_err(|e| Status::invalid_argument(format!("malformed snapshot header: state: {e}")))?;
    let signature = Signature::from_slice(&h.signature).map_err(|_| {
        Status::invalid_argument(format!(
            "malformed snapshot header: signature must be 64 bytes, got {}",
            h.signature.len()
        ))
    })?;
    Ok(SignedHeader {
        header: SnapshotHeader {
            state,
            sequence: h.sequence,
            as_of_unix_ms: h.as_of_unix_ms,
            previous_digest: SnapshotDigest(bytes32("previous_digest", &h.previous_digest)?),
            item_count: h.item_count,
            items_root: bytes32("items_root", &h.items_root)?,
        },
        signature,
    })
}

pub fn signed_header_to_proto(s: &SignedHeader) -> proto::SnapshotHeader {
    let h = &s.header;
    proto::SnapshotHeader {
        state: h.state.to_string(),
        sequence: h.sequence,
        as_of_unix_ms: h.as_of_unix_ms,
        previous_digest: h.previous_digest.0.to_vec().into(),
        item_count: h.item_count,
        items_root: h.items_root.to_vec().into(),
        signature: s.signature.to_bytes().to_vec().into(),
    }
}

pub fn receipt_to_proto(r: &Receipt) -> proto::Receipt {
    proto::Receipt {
        state: r.state.to_string(),
        sequence: r.sequence,
        snapshot_digest: r.digest.0.to_vec().into(),
        accepted_at_unix_ms: r.accepted_at_unix_ms,
        coordinator_signature: r.signature.to_bytes().to_vec().into(),
    }
}

/// Why a receipt from the wire is not well formed.
#[derive(Debug, thiserror::Error)]
#[error("malformed receipt: {0}")]
pub struct MalformedReceipt(&'static str);

pub fn receipt_from_proto(r: &proto::Receipt) -> Result<Receipt, MalformedReceipt> {
    Ok(Receipt {
        state: StateCode::parse(&r.state).map_err(|_| MalformedReceipt("state"))?,
        sequence: r.sequence,
        digest: SnapshotDigest::from_slice(&r.snapshot_digest)
            .ok_or(MalformedReceipt("snapshot_digest"))?,
        accepted_at_unix_ms: r.accepted_at_unix_ms,
        signature: Signature::from_slice(&r.coordinator_signature)
            .map_err(|_| MalformedReceipt("coordinator_signature"))?,
    })
}

pub fn snapshot_info_to_proto(s: &StoredSnapshot) -> proto::SnapshotInfo {
    proto::SnapshotInfo {
        header: Some(signed_header_to_proto(&s.signed)),
        digest: s.digest.0.to_vec().into(),
        receipt: Some(receipt_to_proto(&s.receipt)),
    }
}

/// Why a snapshot info from the wire is not well formed.
pub fn snapshot_info_from_proto(
    info: &proto::SnapshotInfo,
) -> Result<(SignedHeader, Receipt), String> {
    let header = info.header.as_ref().ok_or("snapshot info without header")?;
    let signed = signed_header_from_proto(header).map_err(|s| s.message().to_string())?;
    let receipt = info
        .receipt
        .as_ref()
        .ok_or("snapshot info without receipt")?;
    let receipt = receipt_from_proto(receipt).map_err(|e| e.to_string())?;
    Ok((signed, receipt))
}
