//! Metrics endpoint, RPC spans and JSON logs, and graceful shutdown of the
//! `tally coordinator` process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tally::item::Status;
use tally::proto::{self, alerts_client::AlertsClient, snapshots_client::SnapshotsClient};
use tally::reconcile::EngineConfig;
use tally::snapshot::SnapshotDigest;
use tally::support::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::{self, chunk_msg, header_msg, items, snapshot, submit};

/// `GET /metrics` over plain HTTP/1.1; returns the body after checking the
/// status line and the content type.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect to metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample whose name and labels are exactly `series`.
#[track_caller]
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Scrapes until `series` has `value`, for state that settles asynchronously.
async fn wait_for_sample(addr: std::net::SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr).await;
        if sample(&text, series) == value {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Served {
    grpc: String,
    metrics: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_with_metrics(dir: &Path) -> Served {
    let coordinator = common::assemble(
        dir,
        &["RUS", "KAZ"],
        Limits::default(),
        EngineConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc = format!("http://{}", listener.local_addr().expect("addr"));
    let metrics = metrics_listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tally::coordinator::server::run(
            coordinator,
            listener,
            Some(metrics_listener),
            async {
                let _ = stopped.await;
            },
            Default::default(),
        )
        .await
        .expect("server");
    });
    Served {
        grpc,
        metrics,
        stop,
        task,
    }
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

#[tokio::test]
async fn metrics_count_submissions_rejections_open_alerts_and_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve_with_metrics(dir.path()).await;
    let before = scrape(served.metrics).await;
    assert_eq!(sample(&before, "tally_snapshots_accepted_total"), 0.0);
    assert_eq!(
        sample(&before, "tally_alerts_open{kind=\"reported_lost\"}"),
        0.0
    );

    let mut client = SnapshotsClient::connect(served.grpc.clone())
        .await
        .expect("connect");
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9P39", "A1", Status::InService, None),
            ("9P39", "A2", Status::Lost, None),
            ("9M39", "B7", Status::InStorage, None),
        ]),
    );
    submit(&mut client, &rus1).await.expect("accepted");
    // The same snapshot again: answered with its receipt, not counted twice.
    submit(&mut client, &rus1).await.expect("resubmission");
    // Sequence 3 after 1: a gap, refused with FAILED_PRECONDITION.
    let gap = snapshot("RUS", 3, rus1.digest(), &items(&[]));
    let refused = submit(&mut client, &gap).await.expect_err("gap refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let text = scrape(served.metrics).await;
    assert_eq!(sample(&text, "tally_snapshots_accepted_total"), 1.0);
    assert_eq!(sample(&text, "tally_snapshots_resubmitted_total"), 1.0);
    assert_eq!(sample(&text, "tally_items_ingested_total"), 3.0);
    assert_eq!(
        sample(
            &text,
            "tally_snapshots_rejected_total{reason=\"failed_precondition\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "tally_ingest_duration_seconds_count"), 1.0);
    assert_eq!(
        sample(
            &text,
            "tally_reconcile_duration_seconds_count{trigger=\"submission\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "tally_alerts_open{kind=\"reported_lost\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "tally_alerts_open{kind=\"seized_item\"}"),
        0.0
    );
    assert_eq!(sample(&text, "tally_alert_watchers"), 0.0);
    assert_eq!(sample(&text, "tally_submissions_in_flight"), 0.0);

    // A watcher is counted while connected and not after it hangs up, even
    // though no event arrives to reveal the hang-up.
    let mut alerts = AlertsClient::connect(served.grpc.clone())
        .await
        .expect("connect");
    let mut watch = alerts
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("event").expect("one event");
    assert_eq!(first.kind, "reported_lost");
    wait_for_sample(served.metrics, "tally_alert_watchers", 1.0).await;
    drop(watch);
    wait_for_sample(served.metrics, "tally_alert_watchers", 0.0).await;
    served.stop().await;

    // After a restart the counters start again, but the open-alert gauge
    // comes from the store.
    let served = serve_with_metrics(dir.path()).await;
    let text = scrape(served.metrics).await;
    assert_eq!(sample(&text, "tally_snapshots_accepted_total"), 0.0);
    assert_eq!(
        sample(&text, "tally_alerts_open{kind=\"reported_lost\"}"),
        1.0
    );
    served.stop().await;
}

// ---------------------------------------------------------------------------
// `tally coordinator` as a child process.
// ---------------------------------------------------------------------------

const GRACE_SECONDS: u64 = 3;

/// Writes keys and a coordinator configuration (gRPC and metrics on free
/// ports, a short shutdown grace) into `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let keys = dir.join("keys");
    tally::support::keys::write_key_pair(&keys, "coordinator", &common::coordinator_key())
        .expect("key");
    for st in ["RUS", "KAZ"] {
        tally::support::keys::write_key_pair(&keys, st, &common::state_key(st)).expect("key");
    }
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
insecure = true
data_dir = "data"
key_file = "keys/coordinator.key"

[metrics]
listen = "127.0.0.1:0"

[shutdown]
grace_seconds = {GRACE_SECONDS}

[[members]]
state = "RUS"
public_key_file = "keys/RUS.pub"

[[members]]
state = "KAZ"
public_key_file = "keys/KAZ.pub"
"#
        ),
    )
    .expect("write config");
    config
}

/// A running `tally coordinator`, its addresses and its stderr file.
struct Process {
    child: Child,
    grpc: String,
    metrics: std::net::SocketAddr,
    stderr: std::path::PathBuf,
}

fn start_process(config: &Path, log_args: &[&str], rust_log: &str, stderr: &Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(log_args)
        .arg("coordinator")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", rust_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("start tally coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut grpc = None;
    let mut metrics = None;
    while grpc.is_none() || metrics.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!(
                    "coordinator printed no addresses ({e}); stderr:\n{}",
                    std::fs::read_to_string(stderr).unwrap_or_default()
                )
            });
        if let Some(addr) = line.strip_prefix("coordinator listening on ") {
            grpc = Some(format!("http://{addr}"));
        } else if let Some(url) = line.strip_prefix("metrics on http://") {
            let addr = url.strip_suffix("/metrics").expect("metrics URL");
            metrics = Some(addr.parse().expect("metrics address"));
        }
    }
    Process {
        child,
        grpc: grpc.expect("gRPC address"),
        metrics: metrics.expect("metrics address"),
        stderr: stderr.to_path_buf(),
    }
}

impl Process {
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the exit, at most `limit`; returns the status and how long
    /// it took. Sleeps asynchronously, so this test's own connections keep
    /// answering the server's goodbye (HTTP/2 GOAWAY and ping) meanwhile.
    async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "coordinator still running {limit:?} after SIGTERM; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Never leave a coordinator behind when a test fails half-way.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a Submit call fed from a channel: the call stays open until the
/// sender is dropped.
fn open_upload(
    channel: Channel,
) -> (
    mpsc::Sender<proto::SubmitRequest>,
    tokio::task::JoinHandle<Result<proto::Receipt, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let call = tokio::spawn(async move {
        SnapshotsClient::new(channel)
            .submit(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    (tx, call)
}

#[tokio::test]
async fn sigterm_drains_then_exits_in_time_and_a_restart_finds_only_whole_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let first_log = dir.path().join("first.log");
    let mut process = start_process(&config, &["--log-format", "json"], "info", &first_log);
    let channel = Channel::from_shared(process.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");

    // Acknowledged before shutdown: RUS 1, with a lost item (one alert).
    let mut client = SnapshotsClient::new(channel.clone());
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9P39", "A1", Status::InService, None),
            ("9P39", "A2", Status::Lost, None),
        ]),
    );
    submit(&mut client, &rus1).await.expect("RUS 1 accepted");

    let mut alerts = AlertsClient::new(channel.clone());
    let mut watch = alerts
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("event")
        .expect("replayed event");

    // Two uploads in flight: KAZ 1 will be finished during the grace period,
    // RUS 2 never will (its client stalls after the header).
    let kaz1 = snapshot(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "K1", Status::InService, None)]),
    );
    let (kaz_tx, kaz_call) = open_upload(channel.clone());
    kaz_tx.send(header_msg(&kaz1.signed)).await.expect("send");
    let rus2 = snapshot(
        "RUS",
        2,
        rus1.digest(),
        &items(&[("9P39", "A1", Status::InService, None)]),
    );
    let (rus_tx, rus_call) = open_upload(channel.clone());
    rus_tx.send(header_msg(&rus2.signed)).await.expect("send");
    wait_for_sample(process.metrics, "tally_submissions_in_flight", 2.0).await;

    process.sigterm();
    let signalled = Instant::now();

    // Health turns NOT_SERVING.
    let mut health = HealthClient::new(channel.clone());
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "tally.v1.Snapshots".into(),
            })
            .await
            .expect("health answers while draining")
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(GRACE_SECONDS),
            "health never turned NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // New submissions are refused with a clear UNAVAILABLE.
    let refused = submit(&mut client, &kaz1)
        .await
        .expect_err("refused while draining");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("shutting down"),
        "{}",
        refused.message()
    );

    // The watch stream ends cleanly (no error), without waiting for the grace.
    let ended = tokio::time::timeout(Duration::from_secs(GRACE_SECONDS), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("watch ended within the grace period");
    assert!(matches!(ended, Ok(None)), "clean end of stream: {ended:?}");

    // An upload in flight may finish: KAZ 1 gets its receipt.
    for c in &kaz1.chunks {
        kaz_tx.send(chunk_msg(c)).await.expect("send chunk");
    }
    drop(kaz_tx);
    let kaz_receipt = kaz_call
        .await
        .expect("task")
        .expect("KAZ 1 finished during the grace period");
    assert_eq!(kaz_receipt.sequence, 1);

    // RUS 2 stalls: the process drops it at the end of the grace period
    // and exits with status 0.
    let (status, _) = process
        .wait_exit(Duration::from_secs(GRACE_SECONDS + 10))
        .await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_secs(GRACE_SECONDS) - Duration::from_millis(200),
        "exited after {took:?}, before the grace period for the stalled upload was over"
    );
    assert!(
        took < Duration::from_secs(GRACE_SECONDS + 5),
        "exited only after {took:?}"
    );
    let rus2_result = tokio::time::timeout(Duration::from_secs(10), rus_call)
        .await
        .expect("stalled upload ends with the process")
        .expect("task");
    assert!(rus2_result.is_err(), "RUS 2 must not get a receipt");
    drop(rus_tx);

    // The log is JSON, one object per line, and the submission's span
    // carries its state, sequence and item count.
    let log = std::fs::read_to_string(&first_log).expect("log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let accepted_kaz = lines
        .iter()
        .find(|v| v["fields"]["message"] == "snapshot accepted" && v["span"]["state"] == "KAZ");
    let accepted_kaz = accepted_kaz.unwrap_or_else(|| panic!("no KAZ acceptance in:\n{log}"));
    assert_eq!(accepted_kaz["span"]["sequence"], 1);
    assert_eq!(accepted_kaz["span"]["items"], 1);
    assert_eq!(accepted_kaz["span"]["method"], "/tally.v1.Snapshots/Submit");
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "WARN" && v["fields"]["dropped_submissions"] == 1),
        "the dropped upload is logged:\n{log}"
    );

    // Restart: everything acknowledged is there, the dropped upload is not.
    let second_log = dir.path().join("second.log");
    let mut process = start_process(&config, &[], "warn", &second_log);
    let mut client = SnapshotsClient::connect(process.grpc.clone())
        .await
        .expect("connect");
    for (st, expected) in [("RUS", vec![1]), ("KAZ", vec![1])] {
        let listed = client
            .list_snapshots(proto::ListSnapshotsRequest {
                state: st.into(),
                from_sequence: 1,
                limit: 0,
            })
            .await
            .expect("list")
            .into_inner();
        let sequences: Vec<u64> = listed
            .snapshots
            .iter()
            .map(|s| s.header.as_ref().map_or(0, |h| h.sequence))
            .collect();
        assert_eq!(sequences, expected, "{st}");
    }
    let (kaz_header, _) = common::fetch_and_verify(&mut client, "KAZ", 1).await;
    assert_eq!(kaz_header.digest(), kaz1.digest());
    common::fetch_and_verify(&mut client, "RUS", 1).await;
    // RUS 2 can now be submitted in full: nothing of the dropped one is in the way.
    submit(&mut client, &rus2)
        .await
        .expect("RUS 2 accepted after restart");

    // Idle: the shutdown is quick and clean. RUST_LOG=warn keeps info lines out.
    process.sigterm();
    let (status, took) = process
        .wait_exit(Duration::from_secs(GRACE_SECONDS + 5))
        .await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(GRACE_SECONDS),
        "idle shutdown took {took:?}"
    );
    let log = std::fs::read_to_string(&second_log).expect("log");
    assert!(!log.contains("INFO"), "RUST_LOG=warn filters info:\n{log}");
}

/// A supervisor that reads the address and then closes the pipe (or starts
/// the coordinator with its output going nowhere) must not take it down:
/// `println!` panics on a closed standard output. Here the pipe is closed
/// before the coordinator writes anything, so every start-up line fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_standard_output_does_not_stop_the_coordinator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    // A port picked here, since the printed address is never read.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        ),
    )
    .expect("config");
    let stderr = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["coordinator", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start tally coordinator");
    drop(child.stdout.take());
    let mut process = Process {
        child,
        grpc: format!("http://127.0.0.1:{port}"),
        metrics: "127.0.0.1:0".parse().expect("address"),
        stderr,
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        if let Ok(client) = SnapshotsClient::connect(process.grpc.clone()).await {
            break client;
        }
        assert!(
            matches!(process.child.try_wait(), Ok(None)),
            "the coordinator exited; stderr:\n{}",
            std::fs::read_to_string(&process.stderr).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the coordinator never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Its start-up lines have all been attempted once it serves calls.
    let info = client
        .get_coordinator_info(proto::GetCoordinatorInfoRequest {})
        .await
        .expect("the coordinator answers");
    assert!(!info.into_inner().states.is_empty());
    assert!(matches!(process.child.try_wait(), Ok(None)));
    let log = std::fs::read_to_string(&process.stderr).unwrap_or_default();
    assert!(
        log.contains("cannot write to standard output"),
        "the lost start-up lines are logged; stderr:\n{log}"
    );

    process.sigterm();
    let (status, _) = process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}");
}
