//! `tally health`: exit 0 if and only if the coordinator's gRPC health
//! service says SERVING, a clear message otherwise.

use std::process::{Command, Output};
use std::time::Duration;

use tally::operator::health::{HealthError, check};
use tonic_health::ServingStatus;

use crate::common::*;

async fn tally_health(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .arg("health")
            .args(&args)
            .output()
            .expect("run tally")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_zero_for_a_serving_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["RUS"]).await;
    let out = tally_health(&["--coordinator", &coord.url()]).await;
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_with_a_clear_message_when_nothing_listens() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let out = tally_health(&["--coordinator", &url, "--timeout", "2s"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the coordinator at {url}")),
        "{stderr}"
    );

    let out = tally_health(&["--coordinator", "127.0.0.1:50051"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a coordinator address"), "{stderr}");
}

/// A server whose health service says NOT_SERVING (as a coordinator that is
/// shutting down does), and that knows no service named "nope".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_when_the_server_is_not_serving_or_the_service_is_unknown() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    let err = check(&url, "", Duration::from_secs(2), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HealthError::NotServing {
                status: "NOT_SERVING",
                ..
            }
        ),
        "{err}"
    );
    let out = tally_health(&["--coordinator", &url]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reports NOT_SERVING for the server"),
        "{stderr}"
    );

    let err = check(&url, "nope", Duration::from_secs(2), None)
        .await
        .unwrap_err();
    assert!(matches!(err, HealthError::UnknownService { .. }), "{err}");
    assert!(err.to_string().contains("no service named 'nope'"), "{err}");

    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    check(&url, "", Duration::from_secs(2), None).await.unwrap();
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
