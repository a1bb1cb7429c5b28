//! `tally demo` end to end: the real binary at a small size with
//! `--keep-running`, checked against the coordinator it leaves serving.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tally::operator::{Connection, Target, connect};
use tally::proto::{
    self, alerts_client::AlertsClient, coordinator_client::CoordinatorClient,
    snapshots_client::SnapshotsClient,
};
use tally::reconcile::AlertKind;

/// Kills the demo if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Lines of stdout up to and including the first containing `until`.
fn read_until(lines: &mpsc::Receiver<String>, until: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(until);
                out.push(line);
                if done {
                    return out;
                }
            }
            Err(e) => panic!(
                "no line with '{until}' within {limit:?} ({e}); output so far:\n{}",
                out.join("\n")
            ),
        }
    }
}

/// The OPEN column of the printed "Open alerts by kind" table.
fn printed_counts(output: &[String]) -> BTreeMap<String, u64> {
    let start = output
        .iter()
        .position(|l| l.starts_with("Open alerts by kind"))
        .expect("counts table printed");
    let mut counts = BTreeMap::new();
    for line in &output[start + 2..] {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"total") || fields.len() != 3 {
            break;
        }
        counts.insert(fields[0].to_string(), fields[2].parse().expect("a count"));
    }
    counts
}

async fn open_alerts_of(client: &mut AlertsClient<Connection>, kind: &str) -> u64 {
    let mut n = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list_alerts(proto::ListAlertsRequest {
                kind: kind.to_string(),
                status: proto::AlertStatus::Open as i32,
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list alerts")
            .into_inner();
        n += page.alerts.len() as u64;
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

/// Every secret the demo wrote: private key seeds (hex), the lines of TLS
/// private keys (PEM), the operator token and its SHA-256 in the
/// configuration, each with the file it came from.
fn secrets_in(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let name = entry.display().to_string();
        let secret_bearing = [".key", ".token", ".toml"];
        if !secret_bearing.iter().any(|ext| name.ends_with(ext)) {
            continue;
        }
        let text = std::fs::read_to_string(&entry).expect("read");
        if name.ends_with(".key") || name.ends_with(".token") {
            for line in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            {
                found.push((name.clone(), line.trim().to_string()));
            }
        }
        if name.ends_with(".toml") {
            for line in text.lines().filter(|l| l.starts_with("token_sha256")) {
                let digest = line.split('"').nth(1).expect("quoted digest");
                found.push((format!("token_sha256 in {name}"), digest.to_string()));
            }
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_opens_every_alert_kind_and_prints_what_the_coordinator_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    // Logs at the most verbose level go to a file, to be searched for secrets.
    let log_file = dir.path().join("demo.log");
    let mut child = tally()
        .args(["demo", "--items", "300", "--keep-running", "--data"])
        .arg(&data)
        .env("RUST_LOG", "trace,h2=info,hyper=info,tower=info,sled=info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_file).expect("log file"))
        .spawn()
        .expect("start tally demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Running(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let output = read_until(&lines, "keeps running at", Duration::from_secs(60));
    let text = output.join("\n");

    // The coordinator it left running.
    let address = output
        .iter()
        .find_map(|l| l.trim().strip_prefix("coordinator:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("coordinator address printed")
        .to_string();
    assert!(address.starts_with("https://localhost:"), "{address}");
    assert!(data.join("coordinator.toml").is_file());
    assert!(
        text.contains(&format!("tally alerts --coordinator {address} list")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "tally trace --coordinator {address} 9P39 KM-87-0412"
    )));
    assert!(text.contains("transfer grace 0 h"), "{text}");

    // Every kind has an alert, and the printed counts are the coordinator's.
    let printed = printed_counts(&output);
    // The demo runs TLS with roles: the printed CA and token are needed.
    let ca = data.join("certs/ca.crt");
    let token_file = data.join("operator.token");
    assert!(
        text.contains(&format!("TALLY_CA_FILE={}", ca.display())),
        "{text}"
    );
    let anonymous = Target {
        coordinator: address.clone(),
        ca: Some(ca.clone()),
        token: None,
    };
    let refused = AlertsClient::new(connect(&anonymous).await.expect("connect"))
        .list_alerts(proto::ListAlertsRequest::default())
        .await
        .expect_err("no token, no alerts");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let operator = Target {
        token: Some(
            std::fs::read_to_string(&token_file)
                .expect("token")
                .trim()
                .to_string(),
        ),
        ..anonymous
    };
    let mut client = AlertsClient::new(connect(&operator).await.expect("connect"));
    for kind in AlertKind::ALL {
        let name = kind.as_str();
        let open = open_alerts_of(&mut client, name).await;
        assert!(open >= 1, "no open {name} alert; output:\n{text}");
        assert_eq!(printed.get(name), Some(&open), "{name}; output:\n{text}");
    }
    assert!(
        text.contains("Every planted discrepancy was found, and nothing else."),
        "{text}"
    );
    let top = output
        .iter()
        .skip_while(|l| !l.starts_with("The ten most severe"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.trim_start().starts_with('#'))
        .count();
    assert_eq!(top, 10, "{text}");

    // The standby node's conflict was refused, and said so.
    assert!(text.contains("refused (AlreadyExists)"), "{text}");

    // The trail of every seized launcher, including the Cyrillic spelling,
    // and the one no member ever reported.
    for (model, serial) in [
        ("9P39", "KM-87-0412"),
        ("9P39", "BC841170"),
        ("9P516", "TP-91-0033"),
        ("9K38", "ом-90-2205"),
        ("9K310", "PK-86-0090"),
        ("9P39", "AE-88-0761"),
        ("9P39", "XX-95-0001"),
    ] {
        let heading = format!("== seized {model} {serial}:");
        let at = output
            .iter()
            .position(|l| l.starts_with(&heading))
            .unwrap_or_else(|| panic!("no trail for {model} {serial}:\n{text}"));
        assert!(
            output[at + 1..]
                .iter()
                .take_while(|l| !l.starts_with("=="))
                .any(|l| l.starts_with("Custody:")),
            "trail of {serial} has no custody line:\n{text}"
        );
    }
    assert!(
        text.contains("КМ-87-0412"),
        "Cyrillic spelling in the trail:\n{text}"
    );
    assert!(text.contains("AS OF (UTC)"), "{text}");
    assert!(text.contains("Custody: no member state has ever reported this item"));

    // No secret is logged, printed or returned by an RPC.
    let mut answers = format!(
        "{:?}",
        client
            .list_alerts(proto::ListAlertsRequest::default())
            .await
            .expect("alerts")
    );
    let channel = connect(&operator).await.expect("connect");
    answers += &format!(
        "{:?}{:?}",
        CoordinatorClient::new(channel.clone())
            .get_status(proto::GetStatusRequest::default())
            .await
            .expect("status"),
        SnapshotsClient::new(channel)
            .get_coordinator_info(proto::GetCoordinatorInfoRequest::default())
            .await
            .expect("info"),
    );
    let log = std::fs::read_to_string(&log_file).expect("log");
    assert!(
        log.contains("accepted") && log.contains("TRACE"),
        "the log should hold the trace of the run:\n{log}"
    );
    let secrets = secrets_in(&data);
    assert!(secrets.len() >= 6 + 6 + 2, "{secrets:?}");
    for (source, secret) in &secrets {
        for (what, text) in [("log", &log), ("output", &text), ("RPC answers", &answers)] {
            assert!(
                !text.contains(secret.as_str()),
                "{source} appears in the {what}"
            );
        }
    }

    // SIGTERM stops it cleanly.
    let mut demo = demo;
    let status = Command::new("kill")
        .args(["-TERM", &demo.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty_and_too_few_items() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), "x").unwrap();
    let out = tally()
        .args(["demo", "--items", "300", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not empty: the demo needs a fresh directory"),
        "{err}"
    );
    assert!(dir.path().join("something").is_file(), "nothing removed");

    let out = tally().args(["demo", "--items", "10"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--items 10 is too small"), "{err}");
}
