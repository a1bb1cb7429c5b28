//! The audit trail: operator actions, rejected submissions and refused calls
//! are recorded with who, from where and why; `tally audit verify` finds a
//! record altered in the store.

use std::path::Path;
use std::process::{Command, Output};

use tally::audit::{Actor, SealedRecord, chain_hash, verify};
use tally::proto::{
    self, alerts_client::AlertsClient, audit_client::AuditClient, seizures_client::SeizuresClient,
    snapshots_client::SnapshotsClient,
};
use tally::snapshot::SnapshotDigest;
use tally_wire::audit::record_from_proto;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{self, TestCoordinator};
use crate::security::{AUDITOR_TOKEN, OPERATOR_TOKEN, pki, start_tls, tls_channel, with_token};

async fn all_records(
    client: &mut AuditClient<Channel>,
    token: Option<&str>,
) -> Vec<proto::AuditRecord> {
    client
        .list_audit_records(with_token(
            proto::ListAuditRecordsRequest {
                from_sequence: 1,
                limit: 0,
            },
            token,
        ))
        .await
        .expect("list audit records")
        .into_inner()
        .records
}

/// The whole trail of a plaintext, open test coordinator, as (description,
/// outcome) pairs.
pub(crate) async fn trail(tc: &TestCoordinator) -> Vec<(String, String)> {
    let mut client = AuditClient::connect(tc.url()).await.expect("connect");
    all_records(&mut client, None)
        .await
        .into_iter()
        .map(|r| (r.description, r.outcome))
        .collect()
}

fn seized(serial: &str) -> proto::ReportSeizuresRequest {
    proto::ReportSeizuresRequest {
        items: vec![proto::SeizedItem {
            model: "9P39".into(),
            serial: serial.into(),
            seized_at_unix_ms: 1_790_000_000_000,
            place: "Border post 4".into(),
            note: String::new(),
        }],
    }
}

#[tokio::test]
async fn actions_refusals_and_rejected_submissions_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("certs"));
    let tc = start_tls(&dir.path().join("data"), &pki).await;
    let person = tls_channel(&tc, &pki, None).await;

    // An operator reports a seizure (raising an alert), acknowledges and
    // resolves it, then tries to acknowledge an alert that does not exist.
    let mut seizures = SeizuresClient::new(person.clone());
    let report = seizures
        .report_seizures(with_token(seized("X1"), Some(OPERATOR_TOKEN)))
        .await
        .expect("seizure report")
        .into_inner();
    let alert_id = report.matches[0].alert_id;
    let mut alerts = AlertsClient::new(person.clone());
    alerts
        .acknowledge_alert(with_token(
            proto::AcknowledgeAlertRequest {
                id: alert_id,
                note: "looking".into(),
            },
            Some(OPERATOR_TOKEN),
        ))
        .await
        .expect("acknowledged");
    alerts
        .resolve_alert(with_token(
            proto::ResolveAlertRequest {
                id: alert_id,
                reason: proto::ResolutionReason::Located as i32,
                note: "found it".into(),
            },
            Some(OPERATOR_TOKEN),
        ))
        .await
        .expect("resolved");
    let missing = alerts
        .acknowledge_alert(with_token(
            proto::AcknowledgeAlertRequest {
                id: 9999,
                note: String::new(),
            },
            Some(OPERATOR_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // An auditor may not act; an anonymous caller may not read alerts.
    let denied = alerts
        .reopen_alert(with_token(
            proto::ReopenAlertRequest {
                id: alert_id,
                note: String::new(),
            },
            Some(AUDITOR_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = alerts
        .list_alerts(with_token(Default::default(), None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // Node RUS submits a snapshot signed for BLR: refused before any item.
    let mut rus = SnapshotsClient::new(tls_channel(&tc, &pki, Some("RUS")).await);
    let foreign = common::snapshot("BLR", 1, SnapshotDigest::GENESIS, &common::many_items(3));
    let refused = common::submit(&mut rus, &foreign).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // ...and a stream that ends before its header.
    let empty = common::send(&mut rus, vec![]).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Nodes may not read the trail; auditors may.
    let node_read = AuditClient::new(tls_channel(&tc, &pki, Some("RUS")).await)
        .list_audit_records(proto::ListAuditRecordsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(node_read.code(), Code::PermissionDenied);
    let mut audit = AuditClient::new(person.clone());
    let records = all_records(&mut audit, Some(AUDITOR_TOKEN)).await;

    let row = |r: &proto::AuditRecord| (r.actor.clone(), r.description.clone(), r.outcome.clone());
    let rows: Vec<_> = records.iter().map(row).collect();
    let want = |actor: &str, description: String, outcome: &str| {
        (actor.to_string(), description, outcome.to_string())
    };
    let expected = vec![
        want(
            "operator olga",
            format!("report 1 seized item(s) as report {}", report.report_id),
            "OK",
        ),
        want(
            "operator olga",
            format!("acknowledge alert {alert_id}"),
            "OK",
        ),
        want(
            "operator olga",
            format!("resolve alert {alert_id} (located)"),
            "OK",
        ),
        want(
            "operator olga",
            "acknowledge alert 9999".into(),
            "NOT_FOUND",
        ),
        want(
            "auditor arman",
            "call /tally.v1.Alerts/ReopenAlert".into(),
            "PERMISSION_DENIED",
        ),
        want(
            "anonymous",
            "call /tally.v1.Alerts/ListAlerts".into(),
            "UNAUTHENTICATED",
        ),
        want(
            "node RUS",
            "submit snapshot BLR #1".into(),
            "PERMISSION_DENIED",
        ),
        want("node RUS", "submit snapshot".into(), "INVALID_ARGUMENT"),
        want(
            "node RUS",
            "call /tally.v1.Audit/ListAuditRecords".into(),
            "PERMISSION_DENIED",
        ),
    ];
    assert_eq!(rows, expected);

    // Reasons and addresses are kept; sequence numbers run from 1.
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.sequence, i as u64 + 1);
        assert!(r.peer.starts_with("127.0.0.1:"), "{r:?}");
        assert!(r.at_unix_ms > 0);
        assert_eq!(r.reason.is_empty(), r.outcome == "OK", "{r:?}");
    }
    assert!(records[6].reason.contains("node RUS"), "{:?}", records[6]);
    assert!(records[6].reason.contains("BLR"), "{:?}", records[6]);
    assert!(records[3].reason.contains("9999"), "{:?}", records[3]);
    assert_eq!(records[1].action, "acknowledge_alert");

    // The decoded record says the same as the readable fields.
    let decoded = record_from_proto(&records[6]).decode().unwrap();
    assert_eq!(
        decoded.event.actor,
        Actor::Node {
            state: common::state("RUS")
        }
    );

    // The chain verifies with the coordinator's key, and no token is in it.
    let sealed: Vec<SealedRecord> = records.iter().map(record_from_proto).collect();
    let chain = verify(&sealed, &common::coordinator_key().verifying_key()).unwrap();
    assert_eq!(chain.records, records.len() as u64);
    for r in &records {
        for token in [OPERATOR_TOKEN, AUDITOR_TOKEN] {
            let enc = &r.encoding[..];
            assert!(
                !enc.windows(token.len()).any(|w| w == token.as_bytes()),
                "record {} holds a token",
                r.sequence
            );
        }
    }

    // Paging: from a sequence, a limit.
    let page = audit
        .list_audit_records(with_token(
            proto::ListAuditRecordsRequest {
                from_sequence: 3,
                limit: 2,
            },
            Some(OPERATOR_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, [3, 4]);
    assert_eq!(page.last_sequence, records.len() as u64);
    tc.stop().await;
}

async fn tally(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(&args)
            .output()
            .expect("run tally")
    })
    .await
    .expect("join")
}

async fn audit_verify(tc: &TestCoordinator) -> Output {
    tally(vec![
        "audit".into(),
        "verify".into(),
        "--coordinator".into(),
        tc.url(),
    ])
    .await
}

/// Changes stored record `sequence` with `alter` while no coordinator runs.
fn tamper(data: &Path, alter: impl FnOnce(&sled::Tree)) {
    let store = common::open_store(data);
    let tree = store.db().open_tree("audit").unwrap();
    alter(&tree);
    tally::coordinator::storage::flush(store.db()).unwrap();
}

fn stored(tree: &sled::Tree, sequence: u64) -> SealedRecord {
    let bytes = tree.get(sequence.to_be_bytes()).unwrap().expect("record");
    SealedRecord::from_bytes(sequence, &bytes)
}

#[tokio::test]
async fn an_altered_audit_record_is_named_by_tally_audit_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tc = TestCoordinator::start(&data, &["RUS"]).await;
    let channel = Channel::from_shared(tc.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut seizures = SeizuresClient::new(channel.clone());
    let mut alerts = AlertsClient::new(channel);
    seizures.report_seizures(seized("X1")).await.unwrap();
    for id in [500, 501, 502] {
        let err = alerts
            .resolve_alert(proto::ResolveAlertRequest {
                id,
                reason: proto::ResolutionReason::WrittenOff as i32,
                note: "gone".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    let out = audit_verify(&tc).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with("audit trail intact: 4 records, head "),
        "{stdout}"
    );
    let list = tally(vec![
        "audit".into(),
        "list".into(),
        "--coordinator".into(),
        tc.url(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert!(list.status.success(), "{list:?}");
    let json: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(json["records"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["records"][2]["description"],
        "resolve alert 501 (written_off)"
    );
    assert_eq!(json["records"][2]["outcome"], "NOT_FOUND");
    tc.stop().await;

    // Someone with write access to the store makes record 3 say the alert
    // was resolved (outcome OK) — a field change, hash and signature kept.
    tamper(&data, |tree| {
        let mut r = stored(tree, 3);
        let mut record = r.decode().unwrap();
        record.event.outcome = tally::audit::Outcome::Ok;
        r.encoding = record.encode();
        tree.insert(3u64.to_be_bytes(), r.to_bytes()).unwrap();
    });
    let tc = TestCoordinator::start(&data, &["RUS"]).await;
    let out = audit_verify(&tc).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("audit record 3: bad hash link"), "{stderr}");
    tc.stop().await;

    // Recomputing every hash from there on does not help without the key.
    tamper(&data, |tree| {
        let mut previous: [u8; 32] = stored(tree, 2).hash_array().unwrap();
        for sequence in 3..=4 {
            let mut r = stored(tree, sequence);
            let h = chain_hash(&previous, &r.encoding);
            r.hash = h.to_vec();
            tree.insert(sequence.to_be_bytes(), r.to_bytes()).unwrap();
            previous = h;
        }
    });
    let tc = TestCoordinator::start(&data, &["RUS"]).await;
    let out = audit_verify(&tc).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("audit record 3: bad signature"), "{stderr}");
    tc.stop().await;

    // Deleting a record leaves a gap.
    tamper(&data, |tree| {
        tree.remove(2u64.to_be_bytes()).unwrap();
    });
    let tc = TestCoordinator::start(&data, &["RUS"]).await;
    let out = audit_verify(&tc).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("audit record 3: gap in sequence numbers: expected record 2"),
        "{stderr}"
    );
    tc.stop().await;
}
