//! Transport security and access control: mutual TLS for nodes, bearer
//! tokens and roles for people, every RPC × every kind of caller.

use std::path::Path;

use tally::access::{AccessPolicy, Person, RPC_TABLE, Role, TokenDigest};
use tally::coordinator::server::ServeOptions;
use tally::proto::{
    self, alerts_client::AlertsClient, audit_client::AuditClient,
    coordinator_client::CoordinatorClient, seizures_client::SeizuresClient,
    snapshots_client::SnapshotsClient, trace_client::TraceClient,
};
use tally::snapshot::SnapshotDigest;
use tally::support::certs::WrittenPki;
use tally::support::tls::{ClientTlsFiles, ServerTlsFiles};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{self, TestCoordinator, state};

pub(crate) const OPERATOR_TOKEN: &str = "tly_test_operator_token";
pub(crate) const AUDITOR_TOKEN: &str = "tly_test_auditor_token";

pub(crate) fn pki(dir: &Path) -> WrittenPki {
    tally::support::certs::init(dir, &[state("RUS"), state("BLR")], &[]).expect("demo PKI")
}

fn policy() -> AccessPolicy {
    AccessPolicy::enforced([
        (
            TokenDigest::of(OPERATOR_TOKEN),
            Person {
                name: "olga".into(),
                role: Role::Operator,
            },
        ),
        (
            TokenDigest::of(AUDITOR_TOKEN),
            Person {
                name: "arman".into(),
                role: Role::Auditor,
            },
        ),
    ])
}

/// A TLS coordinator with RUS and BLR as members, roles enforced.
pub(crate) async fn start_tls(data: &Path, pki: &WrittenPki) -> TestCoordinator {
    let files = ServerTlsFiles {
        cert_file: pki.server_cert.clone(),
        key_file: pki.server_key.clone(),
        client_ca_file: pki.ca_cert.clone(),
    };
    let options = ServeOptions {
        tls: Some(files.server_config().expect("server TLS")),
        access: policy(),
    };
    let coordinator = common::assemble(
        data,
        &["RUS", "BLR"],
        Default::default(),
        Default::default(),
    );
    TestCoordinator::serve_with(coordinator, options).await
}

pub(crate) async fn tls_channel(
    tc: &TestCoordinator,
    pki: &WrittenPki,
    node: Option<&str>,
) -> Channel {
    let files = ClientTlsFiles {
        ca_file: pki.ca_cert.clone(),
        cert_file: node.map(|s| pki.ca_cert.with_file_name(format!("{s}.crt"))),
        key_file: node.map(|s| pki.ca_cert.with_file_name(format!("{s}.key"))),
        server_name: None,
    };
    let url = format!("https://localhost:{}", tc.addr.port());
    tally::support::tls::endpoint(&url, Some(&files))
        .expect("endpoint")
        .connect()
        .await
        .expect("TLS connect")
}

pub(crate) fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header value"),
        );
    }
    request
}

/// Calls `rpc` with a minimal request; returns the status code (`Ok` when the
/// call got past access control and succeeded).
async fn call(rpc: &str, channel: Channel, token: Option<&str>) -> Code {
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |_| Code::Ok);
    match rpc {
        "/grpc.health.v1.Health/Check" => {
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            code(
                c.check(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/grpc.health.v1.Health/Watch" => {
            let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
            code(
                c.watch(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => {
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
            };
            let mut c = ServerReflectionClient::new(channel);
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            code(
                c.server_reflection_info(with_token(tokio_stream::iter(vec![req]), token))
                    .await
                    .map(drop),
            )
        }
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => {
            use tonic_reflection::pb::v1alpha::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
            };
            let mut c = ServerReflectionClient::new(channel);
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            code(
                c.server_reflection_info(with_token(tokio_stream::iter(vec![req]), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Snapshots/Submit" => {
            // A header that does not decode: past access control it is
            // INVALID_ARGUMENT, so nothing is stored either way.
            let msgs = vec![proto::SubmitRequest {
                part: Some(proto::submit_request::Part::Header(Default::default())),
            }];
            let mut c = SnapshotsClient::new(channel);
            code(
                c.submit(with_token(tokio_stream::iter(msgs), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Snapshots/ListSnapshots" => {
            let mut c = SnapshotsClient::new(channel);
            let req = proto::ListSnapshotsRequest {
                state: "RUS".into(),
                ..Default::default()
            };
            code(c.list_snapshots(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Snapshots/GetSnapshot" => {
            let mut c = SnapshotsClient::new(channel);
            let req = proto::GetSnapshotRequest {
                state: "RUS".into(),
                sequence: 1,
            };
            code(c.get_snapshot(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Snapshots/GetCoordinatorInfo" => {
            let mut c = SnapshotsClient::new(channel);
            code(
                c.get_coordinator_info(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Alerts/ListAlerts" => {
            let mut c = AlertsClient::new(channel);
            code(
                c.list_alerts(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Alerts/GetAlert" => {
            let mut c = AlertsClient::new(channel);
            let req = proto::GetAlertRequest { id: 1 };
            code(c.get_alert(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Alerts/WatchAlerts" => {
            let mut c = AlertsClient::new(channel);
            code(
                c.watch_alerts(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Alerts/AcknowledgeAlert" => {
            let mut c = AlertsClient::new(channel);
            let req = proto::AcknowledgeAlertRequest {
                id: 1,
                ..Default::default()
            };
            code(c.acknowledge_alert(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Alerts/ResolveAlert" => {
            let mut c = AlertsClient::new(channel);
            let req = proto::ResolveAlertRequest {
                id: 1,
                ..Default::default()
            };
            code(c.resolve_alert(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Alerts/ReopenAlert" => {
            let mut c = AlertsClient::new(channel);
            let req = proto::ReopenAlertRequest {
                id: 1,
                ..Default::default()
            };
            code(c.reopen_alert(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Seizures/ReportSeizures" => {
            // No items: past access control this is INVALID_ARGUMENT, so no
            // report is stored.
            let mut c = SeizuresClient::new(channel);
            code(
                c.report_seizures(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Seizures/ListSeizureReports" => {
            let mut c = SeizuresClient::new(channel);
            code(
                c.list_seizure_reports(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Coordinator/GetStatus" => {
            let mut c = CoordinatorClient::new(channel);
            code(
                c.get_status(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        "/tally.v1.Trace/TraceItem" => {
            let mut c = TraceClient::new(channel);
            let req = proto::TraceItemRequest {
                model: "9P39".into(),
                serial: "X1".into(),
            };
            code(c.trace_item(with_token(req, token)).await.map(drop))
        }
        "/tally.v1.Audit/ListAuditRecords" => {
            let mut c = AuditClient::new(channel);
            code(
                c.list_audit_records(with_token(Default::default(), token))
                    .await
                    .map(drop),
            )
        }
        other => panic!("{other} is in RPC_TABLE but this test cannot call it yet: add it"),
    }
}

/// The code each call of [`call`] gets once access control lets it
/// through, on the empty store of this test: what the request then earns
/// (docs/protocol.md §6), so a caller let through is told apart from one
/// refused with some other code.
fn code_when_allowed(rpc: &str) -> Code {
    match rpc {
        // A header that does not decode; a report without items; a
        // resolution without a reason.
        "/tally.v1.Snapshots/Submit"
        | "/tally.v1.Seizures/ReportSeizures"
        | "/tally.v1.Alerts/ResolveAlert" => Code::InvalidArgument,
        // Snapshot 1 of RUS and alert 1 do not exist.
        "/tally.v1.Snapshots/GetSnapshot"
        | "/tally.v1.Alerts/GetAlert"
        | "/tally.v1.Alerts/AcknowledgeAlert"
        | "/tally.v1.Alerts/ReopenAlert" => Code::NotFound,
        _ => Code::Ok,
    }
}

#[tokio::test]
async fn every_rpc_for_every_kind_of_caller() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("certs"));
    let tc = start_tls(&dir.path().join("data"), &pki).await;
    let before = common::stored_state(tc.store.as_ref());

    // Caller kinds: (name, client certificate, token).
    let callers: [(&str, Option<&str>, Option<&str>); 5] = [
        ("anonymous", None, None),
        ("unknown token", None, Some("tly_not_a_real_token")),
        ("node RUS", Some("RUS"), None),
        ("auditor", None, Some(AUDITOR_TOKEN)),
        ("operator", None, Some(OPERATOR_TOKEN)),
    ];
    for (rpc, _) in RPC_TABLE {
        let service = rpc.trim_start_matches('/').split('/').next().unwrap();
        let method = rpc.rsplit('/').next().unwrap();
        let public = service.starts_with("grpc.");
        // What each caller kind may do, from the issue: auditors read;
        // operators also act; nodes only submit and read snapshots.
        let submit = method == "Submit";
        let snapshot_read = service == "tally.v1.Snapshots" && !submit;
        let act = matches!(
            method,
            "AcknowledgeAlert" | "ResolveAlert" | "ReopenAlert" | "ReportSeizures"
        );
        for (who, cert, token) in callers {
            let channel = tls_channel(&tc, &pki, cert).await;
            let got = call(rpc, channel, token).await;
            let expected: Option<Code> = match who {
                "unknown token" => Some(Code::Unauthenticated),
                _ if public => None,
                "anonymous" => Some(Code::Unauthenticated),
                "node RUS" if submit || snapshot_read => None,
                "node RUS" => Some(Code::PermissionDenied),
                _ if submit => Some(Code::PermissionDenied),
                "auditor" if act => Some(Code::PermissionDenied),
                _ => None,
            };
            let expected = expected.unwrap_or_else(|| code_when_allowed(rpc));
            assert_eq!(got, expected, "{rpc} as {who}");
        }
    }
    // Nothing any of these calls did stored a snapshot.
    assert_eq!(common::stored_state(tc.store.as_ref()), before);
    tc.stop().await;
}

#[tokio::test]
async fn a_node_submits_its_own_state_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("certs"));
    let tc = start_tls(&dir.path().join("data"), &pki).await;
    let items = common::many_items(10);

    // RUS's certificate, RUS's signature: accepted.
    let mut rus = SnapshotsClient::new(tls_channel(&tc, &pki, Some("RUS")).await);
    let own = common::snapshot("RUS", 1, SnapshotDigest::GENESIS, &items);
    let receipt = common::submit(&mut rus, &own).await.expect("accepted");
    assert_eq!(receipt.digest, own.digest());

    // RUS's certificate, a snapshot validly signed with BLR's key: refused
    // before any item is read, and nothing about BLR is stored.
    let before = common::stored_state(tc.store.as_ref());
    let foreign = common::snapshot("BLR", 1, SnapshotDigest::GENESIS, &items);
    let err = common::submit(&mut rus, &foreign).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("node RUS") && err.message().contains("BLR"),
        "{}",
        err.message()
    );
    assert_eq!(common::stored_state(tc.store.as_ref()), before);

    // A node reads its own snapshots, not another state's.
    let own_list = rus
        .list_snapshots(proto::ListSnapshotsRequest {
            state: "RUS".into(),
            ..Default::default()
        })
        .await
        .expect("own snapshots");
    assert_eq!(own_list.get_ref().snapshots.len(), 1);
    let other = rus
        .list_snapshots(proto::ListSnapshotsRequest {
            state: "BLR".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);

    // BLR's own certificate may submit BLR's snapshot.
    let mut blr = SnapshotsClient::new(tls_channel(&tc, &pki, Some("BLR")).await);
    common::submit(&mut blr, &foreign)
        .await
        .expect("BLR accepted");
    tc.stop().await;
}

#[tokio::test]
async fn certificates_from_another_ca_and_plaintext_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki_ours = pki(&dir.path().join("certs"));
    let pki_other = pki(&dir.path().join("other"));
    let tc = start_tls(&dir.path().join("data"), &pki_ours).await;
    let url = format!("https://localhost:{}", tc.addr.port());

    // A client certificate issued by a CA the coordinator does not trust:
    // the handshake fails, no RPC runs.
    let stranger = ClientTlsFiles {
        ca_file: pki_ours.ca_cert.clone(),
        cert_file: Some(pki_other.ca_cert.with_file_name("RUS.crt")),
        key_file: Some(pki_other.ca_cert.with_file_name("RUS.key")),
        server_name: None,
    };
    let refused = match tally::support::tls::endpoint(&url, Some(&stranger))
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(channel) => {
            let mut c = SnapshotsClient::new(channel);
            let items = common::many_items(1);
            let snap = common::snapshot("RUS", 1, SnapshotDigest::GENESIS, &items);
            common::submit(&mut c, &snap).await.is_err()
        }
    };
    assert!(refused, "a certificate from an unknown CA must not submit");
    assert_eq!(common::stored_state(tc.store.as_ref()).0.len(), 0);

    // A client that does not trust the coordinator's CA refuses to talk.
    let wrong_ca = ClientTlsFiles {
        ca_file: pki_other.ca_cert.clone(),
        ..Default::default()
    };
    let connected = tally::support::tls::endpoint(&url, Some(&wrong_ca))
        .unwrap()
        .connect()
        .await;
    let failed = match connected {
        Err(_) => true,
        Ok(channel) => CoordinatorClient::new(channel)
            .get_status(with_token(Default::default(), Some(OPERATOR_TOKEN)))
            .await
            .is_err(),
    };
    assert!(
        failed,
        "a server certificate from an untrusted CA must fail"
    );

    // Plaintext to a TLS listener fails.
    let plain = format!("http://127.0.0.1:{}", tc.addr.port());
    let plain_failed = match Channel::from_shared(plain).unwrap().connect().await {
        Err(_) => true,
        Ok(channel) => CoordinatorClient::new(channel)
            .get_status(with_token(Default::default(), Some(OPERATOR_TOKEN)))
            .await
            .is_err(),
    };
    assert!(plain_failed);
    tc.stop().await;
}

#[test]
fn node_certificates_name_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    for (st, cert, key) in &pki.clients {
        let pem = std::fs::read_to_string(cert).unwrap();
        let der = pem_to_der(&pem);
        assert_eq!(tally::support::tls::certificate_state(&der).unwrap(), *st);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    // The coordinator's certificate names no state: it cannot pass as a node.
    let der = pem_to_der(&std::fs::read_to_string(&pki.server_cert).unwrap());
    assert!(tally::support::tls::certificate_state(&der).is_err());
    // A second run refuses to overwrite the PKI.
    assert!(tally::support::certs::init(dir.path(), &[state("RUS")], &[]).is_err());
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    pem.contents
}

/// A node whose TLS set-up is wrong stops at once with a TLS error instead of
/// backing off forever: no retry can fix a certificate.
#[tokio::test]
async fn a_node_with_a_tls_problem_stops_instead_of_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let ours = pki(&dir.path().join("certs"));
    let other = pki(&dir.path().join("other"));
    let tc = start_tls(&dir.path().join("data"), &ours).await;
    let plain = TestCoordinator::start(&dir.path().join("plain"), &["RUS"]).await;
    let keys = dir.path().join("keys");
    tally::support::keys::write_key_pair(&keys, "RUS", &common::state_key("RUS")).unwrap();
    tally::support::keys::write_key_pair(&keys, "coordinator", &common::coordinator_key()).unwrap();
    let export = dir.path().join("rus.csv");
    std::fs::write(
        &export,
        "model,serial,status,site,counterparty\n9K38,KA-012,in_service,Base 1,\n",
    )
    .unwrap();

    let tls_port = tc.addr.port();
    let plain_port = plain.addr.port();
    let ca = |p: &WrittenPki| p.ca_cert.display().to_string();
    let file = |p: &WrittenPki, name: &str| p.ca_cert.with_file_name(name).display().to_string();
    let cases = [
        (
            "the coordinator's certificate is from a CA the node does not trust",
            format!("https://localhost:{tls_port}"),
            ca(&other),
            file(&ours, "RUS.crt"),
            file(&ours, "RUS.key"),
            "invalid peer certificate",
        ),
        (
            "the node's certificate is from a CA the coordinator does not trust",
            format!("https://localhost:{tls_port}"),
            ca(&ours),
            file(&other, "RUS.crt"),
            file(&other, "RUS.key"),
            "alert",
        ),
        (
            "https:// to a plaintext coordinator",
            format!("https://localhost:{plain_port}"),
            ca(&ours),
            file(&ours, "RUS.crt"),
            file(&ours, "RUS.key"),
            "",
        ),
    ];
    for (i, (case, url, ca_file, cert, key, detail)) in cases.into_iter().enumerate() {
        let cfg = dir.path().join(format!("node-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "state = 'RUS'\nkey_file = 'keys/RUS.key'\ncoordinator = '{url}'\n\
                 outbox_dir = 'outbox-{i}'\ncoordinator_public_key_file = 'keys/coordinator.pub'\n\
                 [tls]\nca_file = '{ca_file}'\ncert_file = '{cert}'\nkey_file = '{key}'\n\
                 [retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\nmax_attempts = 0\n"
            ),
        )
        .unwrap();
        let node = tally::node::Node::open(tally::support::config::NodeConfig::load(&cfg).unwrap())
            .unwrap();
        node.prepare(&export, None, None).unwrap();
        // The guard only keeps a regression from hanging the suite: a node
        // that retries forever never returns.
        let outcome =
            tokio::time::timeout(std::time::Duration::from_secs(60), node.submit_pending()).await;
        let err = match outcome {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("{case}: the submission was accepted"),
            Err(_) => panic!("{case}: the node kept retrying a TLS failure"),
        };
        assert!(
            matches!(err, tally::node::NodeError::Tls { .. }),
            "{case}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not retried") && text.contains(detail),
            "{case}: {text}"
        );
        assert_eq!(
            node.outbox().pending().unwrap().len(),
            1,
            "{case}: kept for later"
        );
    }
    assert_eq!(common::stored_state(tc.store.as_ref()).0.len(), 0);
    assert_eq!(common::stored_state(plain.store.as_ref()).0.len(), 0);
    plain.stop().await;
    tc.stop().await;
}

// ---------------------------------------------------------------------------
// Private key files: refused at start-up when group or others may read them.
// ---------------------------------------------------------------------------

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs the real binary until it exits; a process still running after a
/// generous deadline (it did not refuse, and serves or waits) is killed and
/// the test fails.
fn run_to_exit(args: &[&str], config: &Path, extra: &[&Path]) -> std::process::Output {
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tally");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "tally {args:?} still running after 30 s instead of refusing to start; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The process failed, naming `key` and its mode in its error.
#[track_caller]
fn assert_refused_for(output: &std::process::Output, key: &Path, mode: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started anyway; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&key.display().to_string())
            && stderr.contains(&format!("mode {mode}"))
            && stderr.contains("chmod 600"),
        "the error names the file and its mode; stderr:\n{stderr}"
    );
}

/// deployment.md, Secrets: `tally coordinator` refuses to start when its
/// TLS private key or its Ed25519 key is group-readable (0640), naming the
/// file and the mode, before it opens (and creates) the store.
#[cfg(unix)]
#[test]
fn the_coordinator_refuses_to_start_with_a_group_readable_tls_or_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("certs"));
    let keys = dir.path().join("keys");
    tally::support::keys::write_key_pair(&keys, "coordinator", &common::coordinator_key()).unwrap();
    tally::support::keys::write_key_pair(&keys, "RUS", &common::state_key("RUS")).unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = '127.0.0.1:0'\ndata_dir = 'data'\nkey_file = 'keys/coordinator.key'\n\
             [tls]\ncert_file = '{}'\nkey_file = '{}'\nclient_ca_file = '{}'\n\
             [[members]]\nstate = 'RUS'\npublic_key_file = 'keys/RUS.pub'\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca_cert.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");

    chmod(&pki.server_key, 0o640);
    let output = run_to_exit(&["coordinator"], &config, &[]);
    assert_refused_for(&output, &pki.server_key, "0640");
    assert!(!data.exists(), "the store was opened before the refusal");

    chmod(&pki.server_key, 0o600);
    let signing_key = keys.join("coordinator.key");
    chmod(&signing_key, 0o640);
    let output = run_to_exit(&["coordinator"], &config, &[]);
    assert_refused_for(&output, &signing_key, "0640");
    assert!(!data.exists(), "the store was opened before the refusal");
}

/// deployment.md, Secrets: a node refuses to start (`tally node watch` on
/// an empty drop folder, `tally node submit`) when its TLS client key or
/// its Ed25519 key is group-readable (0640), naming the file and the mode,
/// before it signs anything or opens its outbox. The TLS key used to be
/// checked only at the first connection: a watcher with nothing to send
/// ran on with it.
#[cfg(unix)]
#[test]
fn a_node_refuses_to_start_with_a_group_readable_tls_or_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&dir.path().join("certs"));
    let (_, cert, tls_key) = pki
        .clients
        .iter()
        .find(|(s, _, _)| s.as_str() == "RUS")
        .cloned()
        .expect("RUS client certificate");
    let keys = dir.path().join("keys");
    tally::support::keys::write_key_pair(&keys, "RUS", &common::state_key("RUS")).unwrap();
    let config = dir.path().join("RUS.toml");
    // Nothing listens at that address: the node must not get that far.
    std::fs::write(
        &config,
        format!(
            "state = 'RUS'\nkey_file = 'keys/RUS.key'\noutbox_dir = 'outbox'\n\
             coordinator = 'https://localhost:9'\n\
             [tls]\nca_file = '{}'\ncert_file = '{}'\nkey_file = '{}'\n",
            pki.ca_cert.display(),
            cert.display(),
            tls_key.display()
        ),
    )
    .unwrap();
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let export = dir.path().join("rus.csv");
    std::fs::write(
        &export,
        "model,serial,status,site,counterparty\n9K38,A1,in_service,Depot 1,\n",
    )
    .unwrap();
    let outbox = dir.path().join("outbox");

    chmod(&tls_key, 0o640);
    let output = run_to_exit(&["node", "watch"], &config, &[&drop_dir]);
    assert_refused_for(&output, &tls_key, "0640");
    let output = run_to_exit(&["node", "submit"], &config, &[&export]);
    assert_refused_for(&output, &tls_key, "0640");
    assert!(!outbox.exists(), "the outbox was opened before the refusal");

    chmod(&tls_key, 0o600);
    let signing_key = keys.join("RUS.key");
    chmod(&signing_key, 0o640);
    for (args, extra) in [
        (["node", "watch"], &drop_dir),
        (["node", "submit"], &export),
    ] {
        let output = run_to_exit(&args, &config, &[extra]);
        assert_refused_for(&output, &signing_key, "0640");
    }
    assert!(!outbox.exists(), "the outbox was opened before the refusal");
}
