//! Conversions between generated protobuf types and domain types.

use ed25519_dalek::Signature;
use tally_core::snapshot::{Receipt, SignedHeader, SnapshotDigest, SnapshotHeader};
use tally_core::state::StateCode;

use crate::proto;

/// A message that does not decode into the domain type it stands for. The
/// server answers it as INVALID_ARGUMENT; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// An optional field's wire form: proto3 strings are empty when absent.
pub fn text_or_empty(value: Option<impl ToString>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn bytes32(field: &str, b: &[u8]) -> Result<[u8; 32], Malformed> {
    b.try_into().map_err(|_| {
        Malformed(format!(
            "malformed snapshot header: {field} must be 32 bytes, got {}",
            b.len()
        ))
    })
}

/// Decodes a header message into a signed header (structure only; the
/// signature is checked by the ingestor).
pub fn signed_header_from_proto(h: &proto::SnapshotHeader) -> Result<SignedHeader, Malformed> {
    let state = StateCode::parse(&h.state)
        .map_err(|e| Malformed(format!("malformed snapshot header: state: {e}")))?;
    let signature = Signature::from_slice(&h.signature).map_err(|_| {
        Malformed(format!(
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

/// What `ListSnapshots` and `GetSnapshot` say of one stored snapshot.
pub fn snapshot_info_to_proto(
    signed: &SignedHeader,
    digest: &SnapshotDigest,
    receipt: &Receipt,
) -> proto::SnapshotInfo {
    proto::SnapshotInfo {
        header: Some(signed_header_to_proto(signed)),
        digest: digest.0.to_vec().into(),
        receipt: Some(receipt_to_proto(receipt)),
    }
}

/// Why a snapshot info from the wire is not well formed.
pub fn snapshot_info_from_proto(
    info: &proto::SnapshotInfo,
) -> Result<(SignedHeader, Receipt), String> {
    let header = info.header.as_ref().ok_or("snapshot info without header")?;
    let signed = signed_header_from_proto(header).map_err(|e| e.0)?;
    let receipt = info
        .receipt
        .as_ref()
        .ok_or("snapshot info without receipt")?;
    let receipt = receipt_from_proto(receipt).map_err(|e| e.to_string())?;
    Ok((signed, receipt))
}
