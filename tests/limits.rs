//! Coordinator limits: concurrent uploads (load shedding), stalled uploads
//! and stalled downloads. Message size and item count limits are in
//! `submission_errors`.

use std::time::{Duration, Instant};

use tally::snapshot::SnapshotDigest;
use tally::support::config::Limits;
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
    // RUS's upload has taken the slot once the coordinator counts it.
    tc.wait_for_uploads_in_flight(1).await;
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

/// Readers that stop reading a GetSnapshot stream hold no thread: with the
/// blocking pool cut to two threads, three stalled downloads leave room for
/// a submission (which verifies and commits on that pool), and a stalled
/// reader that resumes gets every chunk in order.
#[test]
fn stalled_snapshot_readers_do_not_starve_submissions() {
    use tally::proto::get_snapshot_response::Part;
    use tally::proto::snapshots_client::SnapshotsClient;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let tc = TestCoordinator::start(dir.path(), &["RUS"]).await;
        // Many small chunks (10 items each): a reader's small flow-control
        // window fills after a few, and the rest wait on the coordinator.
        let mut snap = common::snapshot(
            "RUS",
            1,
            SnapshotDigest::GENESIS,
            &common::many_items(10_000),
        );
        let mut small = Vec::new();
        for chunk in &snap.chunks {
            let raw: Vec<&[u8]> = tally::snapshot::leaf::leaves(chunk)
                .map(|leaf| leaf.unwrap().1)
                .collect();
            small.extend(raw.chunks(10).map(|group| group.concat()));
        }
        snap.chunks = small;
        assert_eq!(snap.chunks.len(), 1_000);
        common::submit(&mut tc.client().await, &snap).await.unwrap();

        let channel = tonic::transport::Endpoint::from_shared(tc.url())
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        let starved = Duration::from_secs(30);
        let mut stalled = tokio::time::timeout(starved, async {
            let mut stalled = Vec::new();
            for _ in 0..3 {
                let mut stream = SnapshotsClient::new(channel.clone())
                    .get_snapshot(tally::proto::GetSnapshotRequest {
                        state: "RUS".into(),
                        sequence: 1,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let info = stream.message().await.unwrap().unwrap();
                assert!(matches!(info.part, Some(Part::Info(_))));
                stalled.push(stream);
            }
            stalled
        })
        .await
        .expect("three readers get their snapshot's info");
        // Let the coordinator read ahead as far as it will.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let next = common::snapshot("RUS", 2, snap.digest(), &common::many_items(3));
        let receipt = tokio::time::timeout(starved, async {
            common::submit(&mut tc.client().await, &next).await.unwrap()
        })
        .await
        .expect("a submission goes through while three readers stall");
        assert_eq!(receipt.sequence, 2);

        let mut rest = Vec::new();
        while let Some(message) = stalled[0].message().await.unwrap() {
            match message.part {
                Some(Part::Chunk(chunk)) => rest.push(chunk.leaves.to_vec()),
                other => panic!("a chunk, not {other:?}"),
            }
        }
        assert_eq!(rest, snap.chunks);
        drop(stalled);
        tc.stop().await;
    });
}
