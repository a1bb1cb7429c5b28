//! Coordinator limits: concurrent uploads (load shedding) and stalled
//! uploads. Message size and item count limits are in `submission_errors`.

use std::time::{Duration, Instant};

use tally::config::Limits;
use tally::snapshot::SnapshotDigest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::common::{self, TestCoordinator};

#[tokio::test]
async fn a_stalled_upload_is_dropped_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        upload_idle_timeout_seconds: 1,
        ..Limits::default()
    };
    let tc = TestCoordinator::start_with_limits(dir.path(), &["RUS"], limits).await;
    let before = common::stored_state(tc.store.as_ref());
    let snap = common::snapshot("RUS", 1, SnapshotDigest::GENESIS, &common::many_items(100));

    // Header and first chunk, then silence with the stream held open.
    let (tx, rx) = mpsc::channel(4);
    tx.send(common::header_msg(&snap.signed)).await.unwrap();
    tx.send(common::chunk_msg(
        &snap.chunks[0][..snap.chunks[0].len() / 2],
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let mut client = tc.client().await;
    let err = client
        .submit(ReceiverStream::new(rx))
        .await
        .expect_err("a stalled upload must fail");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("upload_idle_timeout_seconds"),
        "{}",
        err.message()
    );
    // Generous bound: the point is that it ends, not how fast.
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(tx);
    assert_eq!(common::stored_state(tc.store.as_ref()), before);
    assert_eq!(
        crate::audit::trail(&tc).await,
        [(
            "submit snapshot RUS #1".to_string(),
            "DEADLINE_EXCEEDED".to_string()
        )]
    );

    // The same snapshot sent whole afterwards is accepted.
    common::submit(&mut client, &snap).await.expect("accepted");
    tc.stop().await;
}

#[tokio::test]
async fn uploads_beyond_the_limit_are_shed_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_concurrent_uploads: 1,
        ..Limits::default()
    };
    let tc = TestCoordinator::start_with_limits(dir.path(), &["RUS", "BLR"], limits).await;
    let items = common::many_items(50);
    let rus = common::snapshot("RUS", 1, SnapshotDigest::GENESIS, &items);
    let blr = common::snapshot("BLR", 1, SnapshotDigest::GENESIS, &items);

    // RUS's upload holds the only slot: header sent, stream kept open.
    let (tx, rx) = mpsc::channel(4);
    tx.send(common::header_msg(&rus.signed)).await.unwrap();
    let mut rus_client = tc.client().await;
    let held = tokio::spawn(async move { rus_client.submit(ReceiverStream::new(rx)).await });
    // Give the coordinator time to start RUS's upload (it takes the permit
    // when the call arrives); generous, as this machine is shared.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut blr_client = tc.client().await;
    let shed = common::submit(&mut blr_client, &blr)
        .await
        .expect_err("the second upload is refused while the only slot is taken");
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert!(
        shed.message().contains("max_concurrent_uploads"),
        "{}",
        shed.message()
    );
    assert!(tc.store.latest(common::state("BLR")).unwrap().is_none());
    // Shed before its header was read: recorded without a claimed state.
    assert_eq!(
        crate::audit::trail(&tc).await,
        [("submit snapshot".to_string(), "UNAVAILABLE".to_string())]
    );

    // RUS finishes; the slot frees and BLR is accepted on retry.
    for c in &rus.chunks {
        tx.send(common::chunk_msg(c)).await.unwrap();
    }
    drop(tx);
    held.await.unwrap().expect("RUS accepted");
    common::submit(&mut blr_client, &blr)
        .await
        .expect("BLR accepted after the slot freed");
    tc.stop().await;
}
