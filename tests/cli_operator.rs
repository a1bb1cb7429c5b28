//! The operator CLI against a real coordinator: alerts, seizures, status.

use std::process::{Command, Output};

use tally::item::Status::*;
use tally::snapshot::SnapshotDigest;

use crate::common::*;

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

fn args(list: &[&str], url: &str) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.push("--coordinator".into());
    v.push(url.into());
    v
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_lists_shows_acts_reports_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["RUS", "KAZ"]).await;
    let url = coord.url();
    let mut snaps = coord.client().await;
    for st in ["RUS", "KAZ"] {
        let inv = items(&[(
            "9K38",
            if st == "RUS" { "ка-0 12" } else { "KA012" },
            InService,
            None,
        )]);
        submit(&mut snaps, &snapshot(st, 1, SnapshotDigest::GENESIS, &inv))
            .await
            .unwrap();
    }

    let json: serde_json::Value = serde_json::from_str(&ok(&tally(args(
        &["alerts", "list", "--format", "json"],
        &url,
    ))
    .await))
    .unwrap();
    let alerts = json["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["kind"], "held_by_several_states");
    assert_eq!(alerts[0]["status"], "open");
    let id = alerts[0]["id"].as_u64().unwrap().to_string();

    let table = ok(&tally(args(&["alerts", "list"], &url)).await);
    assert!(
        table.contains("held_by_several_states") && table.contains("9K38/KA012"),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 100),
        "fits 100 columns:\n{table}"
    );

    let shown = ok(&tally(args(&["alerts", "show", &id], &url)).await);
    assert!(
        shown.contains("ка-0 12") && shown.contains("KA012"),
        "{shown}"
    );

    ok(&tally(args(&["alerts", "ack", &id, "--note", "on it"], &url)).await);
    let bad = tally(args(
        &["alerts", "resolve", &id, "--reason", "bored", "--note", "x"],
        &url,
    ))
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("transfer_confirmed"));
    let resolved = ok(&tally(args(
        &[
            "alerts",
            "resolve",
            &id,
            "--reason",
            "data_entry_error",
            "--note",
            "typo",
        ],
        &url,
    ))
    .await);
    assert!(resolved.contains("resolved"), "{resolved}");
    let again = tally(args(&["alerts", "ack", &id], &url)).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot be acknowledged"));

    let csv = dir.path().join("seized.csv");
    std::fs::write(&csv, "model,serial,seized_at,place\n9K38,KA-012,2026-11-20,Border post 7\n9M39,Q-9,2026-11-21T08:30:00Z,Depot raid\n").unwrap();
    let report = ok(&tally(args(&["seized", "report", csv.to_str().unwrap()], &url)).await);
    assert!(
        report.contains("9K38/KA012") && report.contains("never reported"),
        "{report}"
    );
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(
        &bad_csv,
        "model,serial,seized_at,place\n9K38,KA-012,yesterday,x\n",
    )
    .unwrap();
    let bad = tally(args(&["seized", "report", bad_csv.to_str().unwrap()], &url)).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.csv:2: column 'seized_at'"));

    let status: serde_json::Value =
        serde_json::from_str(&ok(
            &tally(args(&["status", "--format", "json"], &url)).await
        ))
        .unwrap();
    assert_eq!(status["members"][0]["state"], "KAZ");
    assert_eq!(status["open_alerts"]["seized_item"], 2);
    drop(snaps);
    coord.stop().await;
}
