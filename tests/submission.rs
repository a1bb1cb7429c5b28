//! The happy path: states submit chains of snapshots; they survive restarts.

use tally::item::Status::*;
use tally::proto;
use tally::reconcile::AlertKind;
use tally::snapshot::SnapshotDigest;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_states_submit_chains_and_everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut client = coord.client().await;

    let mut receipts = Vec::new();
    for st in ["RUS", "KAZ"] {
        let mut prev = SnapshotDigest::GENESIS;
        for seq in 1..=3u64 {
            let inv = items(&[
                ("9K38", "ка-0 12", InService, None),
                ("9M39", &format!("M-{seq}"), InStorage, None),
                ("9P39", "P1", TransferredOut, Some("BLR")),
            ]);
            let snap = snapshot(st, seq, prev, &inv);
            let receipt = submit(&mut client, &snap).await.expect("accepted");
            assert_eq!(receipt.digest, snap.digest());
            assert_eq!(receipt.sequence, seq);
            assert!(receipt.verify(&coordinator_key().verifying_key()));
            prev = snap.digest();
            receipts.push(receipt);
        }
    }
    coord.stop().await;

    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut client = coord.client().await;
    for st in ["RUS", "KAZ"] {
        let list = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state: st.into(),
                from_sequence: 0,
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.latest_sequence, 3);
        assert_eq!(list.snapshots.len(), 3);
        let mut prev = SnapshotDigest::GENESIS;
        for seq in 1..=3 {
            let (signed, _) = fetch_and_verify(&mut client, st, seq).await;
            assert_eq!(signed.header.previous_digest, prev, "hash chain intact");
            assert_eq!(signed.header.item_count, 3);
            prev = signed.digest();
        }
    }
    // Receipts read back are the receipts issued.
    let stored = coord.store.get(state("KAZ"), 2).unwrap().unwrap();
    assert_eq!(stored.receipt, receipts[4]);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_an_accepted_snapshot_returns_the_same_receipt_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["ARM"]).await;
    let mut client = coord.client().await;
    let snap = snapshot("ARM", 1, SnapshotDigest::GENESIS, &many_items(10));
    let first = submit(&mut client, &snap).await.unwrap();
    let before = stored_state(coord.store.as_ref());
    let again = submit(&mut client, &snap).await.unwrap();
    assert_eq!(first, again);
    // Only the header is needed to recognise it.
    let header_only = send(&mut client, vec![header_msg(&snap.signed)])
        .await
        .unwrap();
    assert_eq!(first, header_only);
    assert_eq!(stored_state(coord.store.as_ref()), before);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_streams_in_chunks_under_the_default_message_limit() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["TJK"]).await;
    let mut client = coord.client().await;
    let inv = many_items(200_000);
    let snap = snapshot("TJK", 1, SnapshotDigest::GENESIS, &inv);
    assert!(snap.chunks.len() > 3, "several chunks");
    assert!(snap.chunks.iter().all(|c| c.len() < 2 * 1024 * 1024));
    submit(&mut client, &snap).await.unwrap();
    let (signed, leaves) = fetch_and_verify(&mut client, "TJK", 1).await;
    assert_eq!(signed.header.item_count, 200_000);
    assert_eq!(
        leaves.len(),
        snap.chunks.iter().map(Vec::len).sum::<usize>()
    );
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_snapshot_and_duplicate_rows_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["KGZ"]).await;
    let mut client = coord.client().await;
    let empty = snapshot("KGZ", 1, SnapshotDigest::GENESIS, &[]);
    submit(&mut client, &empty).await.unwrap();
    // Two rows for one item key (in two spellings) are a finding for the
    // reconciler, not a transport error.
    let dup = items(&[
        ("9K38", "KA-012", InService, None),
        ("9K38", "ка012", InStorage, None),
    ]);
    let snap = snapshot("KGZ", 2, empty.digest(), &dup);
    submit(&mut client, &snap).await.unwrap();
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_info_names_its_key_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "BLR"]).await;
    let info = coord
        .client()
        .await
        .get_coordinator_info(proto::GetCoordinatorInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        &info.public_key[..],
        coordinator_key().verifying_key().as_bytes()
    );
    assert_eq!(info.states, ["BLR", "RUS"]);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let channel = tonic::transport::Channel::from_shared(coord.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tally.v1.Snapshots"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"tally.v1.Snapshots".to_string()),
        "{names:?}"
    );

    // The pre-release name, which stock clients of other languages speak,
    // without credentials too.
    use tonic_reflection::pb::v1alpha as alpha;
    let channel = tonic::transport::Channel::from_shared(coord.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "tally.v1.Alerts".into(),
            ),
        ),
    };
    let response = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("unexpected v1alpha reflection answer: {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    coord.stop().await;
}

/// The coordinator names no storage backend: on in-memory storage it
/// accepts a chain, reconciles it, keeps a conflicting submission as
/// evidence and audits the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_in_memory_storage_accepts_reconciles_and_audits() {
    let coordinator = tally::coordinator::server::assemble(
        tally::coordinator::storage::Storage::in_memory(),
        ["RUS", "KAZ"].map(|s| (state(s), state_key(s).verifying_key())),
        coordinator_key(),
        Default::default(),
        Default::default(),
        Default::default(),
        std::time::Duration::from_secs(3600),
    )
    .expect("assemble on in-memory storage");
    let audit = coordinator.audit.clone();
    let coord = TestCoordinator::serve(coordinator).await;
    let mut client = coord.client().await;
    let lost = items(&[("9M39", "B2", Lost, None)]);
    let first = snapshot("RUS", 1, SnapshotDigest::GENESIS, &lost);
    submit(&mut client, &first).await.expect("accepted");
    let second = snapshot("RUS", 2, first.digest(), &lost);
    let receipt = submit(&mut client, &second).await.expect("accepted");
    assert!(receipt.verify(&coordinator_key().verifying_key()));
    let latest = coord.store.latest(state("RUS")).unwrap().expect("stored");
    assert_eq!(latest.digest, second.digest());

    let conflicting = snapshot("RUS", 1, SnapshotDigest::GENESIS, &[]);
    submit(&mut client, &conflicting)
        .await
        .expect_err("another RUS 1");
    assert_eq!(coord.store.equivocations().unwrap().len(), 1);
    assert_eq!(audit.last_sequence(), 1, "the refusal is audited");

    let kinds: Vec<AlertKind> = coord
        .reconciler
        .as_ref()
        .expect("running")
        .alerts()
        .current_alerts()
        .unwrap()
        .iter()
        .map(|a| a.key.kind)
        .collect();
    assert!(kinds.contains(&AlertKind::ReportedLost), "{kinds:?}");
    coord.stop().await;
}
