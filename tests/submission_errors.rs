//! Bad input: every case gets the right status code and an actionable
//! message, and leaves stored state exactly as it was.

use tally::proto;
use tally::snapshot::{SnapshotDigest, build_snapshot};
use tally::support::config::Limits;
use tonic::Code;

use crate::common::*;

/// A coordinator for RUS with one accepted snapshot (sequence 1).
async fn with_one_snapshot(dir: &std::path::Path) -> (TestCoordinator, TestSnapshot) {
    let coord = TestCoordinator::start(dir, &["RUS"]).await;
    let first = snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(50));
    submit(&mut coord.client().await, &first)
        .await
        .expect("first accepted");
    (coord, first)
}

#[track_caller]
fn assert_status(
    result: Result<tally::snapshot::Receipt, tonic::Status>,
    code: Code,
    needle: &str,
) {
    match result {
        Ok(r) => panic!(
            "expected {code:?} containing {needle:?}, got a receipt for {}",
            r.sequence
        ),
        Err(s) => {
            assert_eq!(s.code(), code, "message was: {}", s.message());
            assert!(
                s.message().contains(needle),
                "message {:?} does not contain {needle:?}",
                s.message()
            );
        }
    }
}

/// Runs `messages` against a fresh coordinator holding one snapshot, checks
/// the status, and checks that stored state did not change.
async fn rejects(
    messages: impl FnOnce(&TestSnapshot) -> Vec<proto::SubmitRequest>,
    code: Code,
    needle: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (coord, first) = with_one_snapshot(dir.path()).await;
    let before = stored_state(coord.store.as_ref());
    let result = send(&mut coord.client().await, messages(&first)).await;
    assert_status(result, code, needle);
    assert_eq!(
        stored_state(coord.store.as_ref()),
        before,
        "stored state changed"
    );
    coord.stop().await;
}

fn full(snap: &TestSnapshot) -> Vec<proto::SubmitRequest> {
    let mut m = vec![header_msg(&snap.signed)];
    m.extend(snap.chunks.iter().map(|c| chunk_msg(c)));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_state_is_permission_denied() {
    rejects(
        |_| full(&snapshot("BLR", 1, SnapshotDigest::GENESIS, &many_items(3))),
        Code::PermissionDenied,
        "state BLR is not a member",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_by_another_key_is_unauthenticated() {
    rejects(
        |first| {
            let mut snap = snapshot("RUS", 2, first.digest(), &many_items(3));
            snap.signed = snap.signed.header.sign(&state_key("KAZ"));
            full(&snap)
        },
        Code::Unauthenticated,
        "signature does not verify with RUS's public key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_flipped_header_field_breaks_the_signature() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(3));
            let mut msgs = full(&snap);
            if let Some(proto::submit_request::Part::Header(h)) = &mut msgs[0].part {
                h.as_of_unix_ms += 1;
            }
            msgs
        },
        Code::Unauthenticated,
        "signature does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_out_of_order_are_invalid() {
    rejects(
        |first| {
            let mut inv = many_items(5);
            inv.swap(1, 3);
            // Header consistent with the (wrong) order, so only the order is at fault.
            let unsigned = build_snapshot(state("RUS"), 2, 1, first.digest(), &inv);
            let signed = unsigned.header.sign(&state_key("RUS"));
            let mut m = vec![header_msg(&signed)];
            m.extend(unsigned.chunks.iter().map(|c| chunk_msg(c)));
            m
        },
        Code::InvalidArgument,
        "item 2 (9P39/L000002) is out of order",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_items_than_declared_is_invalid() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(10));
            let short = build_snapshot(state("RUS"), 2, 1, first.digest(), &many_items(9));
            let mut m = vec![header_msg(&snap.signed)];
            m.extend(short.chunks.iter().map(|c| chunk_msg(c)));
            m
        },
        Code::InvalidArgument,
        "declares 10 items but 9 arrived",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_items_than_declared_is_invalid() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(3));
            let long = build_snapshot(state("RUS"), 2, 1, first.digest(), &many_items(4));
            let mut m = vec![header_msg(&snap.signed)];
            m.extend(long.chunks.iter().map(|c| chunk_msg(c)));
            m
        },
        Code::InvalidArgument,
        "more items than the 3 the header declares",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mismatch_is_invalid() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(4));
            let mut header = snap.signed.header;
            header.items_root[0] ^= 1;
            let mut m = vec![header_msg(&header.sign(&state_key("RUS")))];
            m.extend(snap.chunks.iter().map(|c| chunk_msg(c)));
            m
        },
        Code::InvalidArgument,
        "does not match the signed items_root",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_any_item_is_caught() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(4));
            let mut m = vec![header_msg(&snap.signed)];
            let mut leaves = snap.chunks[0].clone();
            // The second leaf's canonical serial: L000001 -> L000003.
            let at = leaves.windows(7).position(|w| w == b"L000001").unwrap() + 6;
            leaves[at] ^= 0b10;
            m.push(chunk_msg(&leaves));
            m
        },
        Code::InvalidArgument,
        "item 1: canonical_serial 'L000003' is not the canonical form of the raw value (expected 'L000001')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_leaves_are_invalid_and_name_the_item() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(2));
            vec![header_msg(&snap.signed), chunk_msg(&[9, 9, 9])]
        },
        Code::InvalidArgument,
        "item 0: unknown leaf version 9",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_fields_are_invalid() {
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(2));
            let mut msgs = full(&snap);
            if let Some(proto::submit_request::Part::Header(h)) = &mut msgs[0].part {
                h.previous_digest = vec![1, 2, 3].into();
            }
            msgs
        },
        Code::InvalidArgument,
        "previous_digest must be 32 bytes, got 3",
    )
    .await;
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(2));
            let mut msgs = full(&snap);
            if let Some(proto::submit_request::Part::Header(h)) = &mut msgs[0].part {
                h.state = "Russia".into();
            }
            msgs
        },
        Code::InvalidArgument,
        "'Russia' is not a state code",
    )
    .await;
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(2));
            let mut msgs = full(&snap);
            if let Some(proto::submit_request::Part::Header(h)) = &mut msgs[0].part {
                h.signature = vec![0; 10].into();
            }
            msgs
        },
        Code::InvalidArgument,
        "signature must be 64 bytes, got 10",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_zero_is_invalid() {
    rejects(
        |_| full(&snapshot("RUS", 0, SnapshotDigest::GENESIS, &many_items(2))),
        Code::InvalidArgument,
        "sequence numbers start at 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_header_chunk_first_and_empty_streams_are_invalid() {
    rejects(
        |first| vec![chunk_msg(&first.chunks[0])],
        Code::InvalidArgument,
        "the first message must be a SnapshotHeader, got an ItemChunk",
    )
    .await;
    rejects(
        |_| vec![proto::SubmitRequest { part: None }],
        Code::InvalidArgument,
        "the first message is empty",
    )
    .await;
    rejects(
        |_| vec![],
        Code::InvalidArgument,
        "the stream ended before a SnapshotHeader",
    )
    .await;
    rejects(
        |first| {
            let snap = snapshot("RUS", 2, first.digest(), &many_items(2));
            vec![header_msg(&snap.signed), header_msg(&snap.signed)]
        },
        Code::InvalidArgument,
        "a second SnapshotHeader arrived",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gap_is_failed_precondition() {
    rejects(
        |first| full(&snapshot("RUS", 3, first.digest(), &many_items(2))),
        Code::FailedPrecondition,
        "the last accepted is 1, so send 2 next",
    )
    .await;
}

/// Like `rejects`, but the rejected header is kept as equivocation evidence:
/// the snapshots are unchanged and exactly one equivocation is added.
async fn rejects_as_equivocation(
    messages: impl FnOnce(&TestSnapshot) -> Vec<proto::SubmitRequest>,
    code: Code,
    needle: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (coord, first) = with_one_snapshot(dir.path()).await;
    let (snaps_before, equivocations_before) = stored_state(coord.store.as_ref());
    let result = send(&mut coord.client().await, messages(&first)).await;
    assert_status(result, code, needle);
    let (snaps_after, equivocations_after) = stored_state(coord.store.as_ref());
    assert_eq!(snaps_after, snaps_before, "snapshots changed");
    assert_eq!(equivocations_after, equivocations_before + 1);
    let recorded = coord.store.equivocations().unwrap().pop().unwrap();
    recorded
        .signed
        .verify(&state_key("RUS").verifying_key())
        .expect("evidence is signed");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_fork_is_failed_precondition_and_recorded() {
    rejects_as_equivocation(
        |_| full(&snapshot("RUS", 2, SnapshotDigest([7; 32]), &many_items(2))),
        Code::FailedPrecondition,
        "forks the chain",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_snapshot_for_a_used_sequence_is_already_exists_and_recorded() {
    rejects_as_equivocation(
        |_| {
            full(&snapshot(
                "RUS",
                1,
                SnapshotDigest::GENESIS,
                &many_items(51),
            ))
        },
        Code::AlreadyExists,
        "RUS sequence 1 was already accepted with digest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_item_limit_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_items_per_snapshot: 5,
        ..Limits::default()
    };
    let coord = TestCoordinator::start_with_limits(dir.path(), &["RUS"], limits).await;
    let result = submit(
        &mut coord.client().await,
        &snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(6)),
    )
    .await;
    assert_status(
        result,
        Code::ResourceExhausted,
        "declares 6 items; this coordinator accepts at most 5",
    );
    assert_eq!(stored_state(coord.store.as_ref()), Default::default());
    coord.stop().await;
}

/// The chain is checked before the item limit: a snapshot accepted before
/// the limit was lowered is still answered with its original receipt, not
/// refused as too big (a node would take that refusal as "not stored", sign
/// another snapshot for the same sequence and be recorded as equivocating).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmission_after_the_limit_was_lowered_gets_its_original_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(6));
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let first = submit(&mut coord.client().await, &snap).await.unwrap();
    coord.stop().await;

    let limits = Limits {
        max_items_per_snapshot: 5,
        ..Limits::default()
    };
    let coord = TestCoordinator::start_with_limits(dir.path(), &["RUS"], limits).await;
    let stored = stored_state(coord.store.as_ref());
    let again = submit(&mut coord.client().await, &snap).await.unwrap();
    assert_eq!(again, first);
    // A new snapshot over the lowered limit is still refused.
    let next = snapshot("RUS", 2, snap.digest(), &many_items(6));
    let result = submit(&mut coord.client().await, &next).await;
    assert_status(
        result,
        Code::ResourceExhausted,
        "this coordinator accepts at most 5",
    );
    assert_eq!(stored_state(coord.store.as_ref()), stored);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_message_bytes: 64 * 1024,
        ..Limits::default()
    };
    let coord = TestCoordinator::start_with_limits(dir.path(), &["RUS"], limits).await;
    let inv = many_items(5000); // one ~280 KB chunk
    let snap = snapshot("RUS", 1, SnapshotDigest::GENESIS, &inv);
    let result = submit(&mut coord.client().await, &snap).await;
    assert_status(
        result,
        Code::ResourceExhausted,
        "larger than the coordinator's limit",
    );
    assert_eq!(stored_state(coord.store.as_ref()), Default::default());
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_leaves_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let snap = snapshot("RUS", 1, SnapshotDigest::GENESIS, &many_items(60_000));
    assert!(snap.chunks.len() >= 3);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut client = coord.client().await;
    let call = tokio::spawn(async move {
        client
            .submit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header_msg(&snap.signed)).await.unwrap();
    tx.send(chunk_msg(&snap.chunks[0])).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    call.abort(); // the client goes away without ending the stream
    let _ = call.await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(stored_state(coord.store.as_ref()), Default::default());
    coord.stop().await;

    // After a restart nothing half-stored shows up, and the full snapshot goes in.
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    assert_eq!(stored_state(coord.store.as_ref()), Default::default());
    submit(&mut coord.client().await, &snap)
        .await
        .expect("accepted after restart");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_upload_does_not_block_the_next_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, first) = with_one_snapshot(dir.path()).await;
    let mut client = coord.client().await;
    let good = snapshot("RUS", 2, first.digest(), &many_items(5));
    let bad = vec![header_msg(&good.signed), chunk_msg(&[1, 0])];
    let refused = send(&mut client, bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    submit(&mut client, &good).await.expect("good one accepted");
    coord.stop().await;
}

/// A client that sends the header and every chunk but then vanishes without
/// ending its request stream has not finished its submission: only the end
/// of the stream commits an upload, so nothing is stored, and the same
/// snapshot sent properly afterwards is accepted as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_after_its_last_chunk_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, first) = with_one_snapshot(dir.path()).await;
    let second = snapshot("RUS", 2, first.digest(), &many_items(3000));
    let before = stored_state(coord.store.as_ref());

    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for message in full(&second) {
        tx.send(message).await.expect("queue a message");
    }
    let mut client = coord.client().await;
    let call = tokio::spawn(async move {
        client
            .submit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // Every frame is on its way; the stream stays open (tx is alive).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!call.is_finished(), "answered before the stream ended");
    // The call goes away with its stream still open. `tx` stays alive: the
    // request body is pumped by the client's connection task, not by the
    // call, so ending it here could still send the end of the stream.
    call.abort();
    let _ = call.await;
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            stored_state(coord.store.as_ref()),
            before,
            "an unfinished submission changed stored state"
        );
    }

    let receipt = submit(&mut coord.client().await, &second)
        .await
        .expect("the full submission is accepted");
    assert_eq!(receipt.sequence, 2);
    let after = stored_state(coord.store.as_ref());
    assert_eq!(after.0["RUS"].len(), 2);
    coord.stop().await;
}
