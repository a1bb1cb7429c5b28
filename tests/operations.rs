//! Seizure reports and coordinator status over real gRPC.

use tally::item::Status::*;
use tally::proto::{self, coordinator_client::CoordinatorClient, seizures_client::SeizuresClient};
use tally::snapshot::SnapshotDigest;
use tonic::Code;

use crate::common::*;

fn seized(model: &str, serial: &str) -> proto::SeizedItem {
    proto::SeizedItem {
        model: model.into(),
        serial: serial.into(),
        seized_at_unix_ms: 1_790_000_000_000,
        place: "Border post 7".into(),
        note: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seized_launchers_are_traced_to_their_last_custodian_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut snaps = coord.client().await;
    let s1 = snapshot(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9P39", "L-55", InService, None),
            ("9P39", "L-56", InService, None),
        ]),
    );
    submit(&mut snaps, &s1).await.unwrap();
    let s2 = snapshot(
        "KAZ",
        2,
        s1.digest(),
        &items(&[("9P39", "L-56", InService, None)]),
    );
    submit(&mut snaps, &s2).await.unwrap();

    let mut client = SeizuresClient::connect(coord.url()).await.unwrap();
    let response = client
        .report_seizures(proto::ReportSeizuresRequest {
            items: vec![seized("9Р39", "l-55"), seized("9P39", "ZZ-1")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.matches.len(), 2);
    let traced = &response.matches[0];
    assert_eq!(
        (traced.model.as_str(), traced.serial.as_str()),
        ("9P39", "L55")
    );
    assert!(traced.alert_id > 0);
    let custody = traced.custody.as_ref().unwrap();
    assert!(!custody.never_reported);
    assert_eq!(custody.last_custodian, "KAZ");
    assert_eq!(custody.last_held_in.as_ref().unwrap().sequence, 1);
    assert_eq!(custody.gone_in.as_ref().unwrap().sequence, 2);
    assert!(response.matches[1].custody.as_ref().unwrap().never_reported);

    // Bad input: a report with an empty serial records nothing.
    let before = client
        .list_seizure_reports(proto::ListSeizureReportsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .reports
        .len();
    let err = client
        .report_seizures(proto::ReportSeizuresRequest {
            items: vec![seized("9P39", "L-57"), seized("9P39", " - ")],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("items[1]: serial"),
        "{}",
        err.message()
    );
    let err = client
        .report_seizures(proto::ReportSeizuresRequest { items: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Unset, future (microseconds) and over-long fields: the whole report is
    // refused, naming the item and the field.
    let an_hour_ahead = tally::support::clock::system_now_unix_ms() + 2 * 3_600_000;
    for (item, expected) in [
        (
            proto::SeizedItem {
                seized_at_unix_ms: 0,
                ..seized("9P39", "L-57")
            },
            "items[1]: seized_at_unix_ms is 0",
        ),
        (
            proto::SeizedItem {
                seized_at_unix_ms: an_hour_ahead,
                ..seized("9P39", "L-57")
            },
            "is in the future",
        ),
        (
            proto::SeizedItem {
                seized_at_unix_ms: 1_790_000_000_000_000,
                ..seized("9P39", "L-57")
            },
            "not microseconds",
        ),
        (
            proto::SeizedItem {
                note: "x".repeat(tally::coordinator::storage::alerts::MAX_NOTE_BYTES + 1),
                ..seized("9P39", "L-57")
            },
            "items[1]: note is 1025 bytes long",
        ),
    ] {
        let err = client
            .report_seizures(proto::ReportSeizuresRequest {
                items: vec![seized("9P39", "L-58"), item],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(expected), "{}", err.message());
    }
    let reports = client
        .list_seizure_reports(proto::ListSeizureReportsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .reports;
    assert_eq!(reports.len(), before);
    assert_eq!(reports[0].items[0].model, "9Р39", "raw spelling kept");

    let mut status = CoordinatorClient::connect(coord.url()).await.unwrap();
    let st = status
        .get_status(proto::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let members: Vec<(&str, u64)> = st
        .members
        .iter()
        .map(|m| (m.state.as_str(), m.last_sequence))
        .collect();
    assert_eq!(members, [("KAZ", 2), ("RUS", 0)]);
    let count = |kind: &str| {
        st.open_alerts
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.open)
    };
    assert_eq!(count("seized_item"), Some(2));
    assert_eq!(count("unaccounted_disappearance"), Some(1));
    assert_eq!(count("held_by_several_states"), Some(0));
    let cursor = st.last_cursor;
    drop((client, status, snaps));
    coord.stop().await;

    // After a restart the reports are replayed: same alerts, no new events.
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut status = CoordinatorClient::connect(coord.url()).await.unwrap();
    let st = status
        .get_status(proto::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.last_cursor, cursor);
    assert_eq!(
        st.open_alerts
            .iter()
            .find(|c| c.kind == "seized_item")
            .map(|c| c.open),
        Some(2)
    );
    drop(status);
    coord.stop().await;
}

/// `ListSeizureReports` pages: `limit` reports at most, `more` until the
/// last, and `after_id` continues where a page ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seizure_reports_are_listed_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let mut client = SeizuresClient::connect(coord.url()).await.unwrap();
    for i in 0..5 {
        client
            .report_seizures(proto::ReportSeizuresRequest {
                items: vec![seized("9P39", &format!("P-{i}"))],
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut after_id = 0;
    loop {
        let page = client
            .list_seizure_reports(proto::ListSeizureReportsRequest { after_id, limit: 2 })
            .await
            .unwrap()
            .into_inner();
        pages.push((page.reports.len(), page.more));
        seen.extend(page.reports.iter().map(|r| r.items[0].serial.clone()));
        match page.reports.last() {
            Some(last) if page.more => after_id = last.id,
            _ => break,
        }
    }
    assert_eq!(pages, [(2, true), (2, true), (1, false)]);
    assert_eq!(seen, ["P-0", "P-1", "P-2", "P-3", "P-4"]);
    // The default page holds them all.
    let all = client
        .list_seizure_reports(proto::ListSeizureReportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.reports.len(), all.more), (5, false));
    coord.stop().await;
}
