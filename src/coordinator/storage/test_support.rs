//! Fixtures for unit tests that need snapshots in a real store.

use ed25519_dalek::SigningKey;

use super::{SledStore, SnapshotStore, StoredSnapshot};
use crate::item::Item;
use crate::snapshot::leaf::leaves;
use crate::snapshot::{Receipt, SnapshotDigest, build_snapshot, sort_items};
use crate::state::StateCode;

/// Commits `items` as `state`'s first snapshot, cut into chunks of
/// `per_chunk` leaves (at least one).
pub(crate) fn commit_first_snapshot(
    store: &SledStore,
    state: StateCode,
    mut items: Vec<Item>,
    per_chunk: usize,
) -> StoredSnapshot {
    sort_items(&mut items);
    let unsigned = build_snapshot(state, 1, 0, SnapshotDigest::GENESIS, &items);
    let all = unsigned.chunks.concat();
    let leaf_bytes: Vec<&[u8]> = leaves(&all).map(|l| l.unwrap().1).collect();
    let upload = store.begin_upload().unwrap();
    let mut chunk_count = 0;
    for (i, chunk) in leaf_bytes.chunks(per_chunk.max(1)).enumerate() {
        store.put_chunk(upload, i as u32, &chunk.concat()).unwrap();
        chunk_count += 1;
    }
    let key = SigningKey::from_bytes(&[7; 32]);
    let signed = unsigned.header.sign(&key);
    let digest = signed.digest();
    let record = StoredSnapshot {
        receipt: Receipt::issue(&key, state, 1, digest, 0),
        signed,
        digest,
        upload,
        chunk_count,
    };
    store.commit(&record).unwrap();
    record
}
