//! The operator side of alerts over real gRPC: actions and their history,
//! errors, paging, and watching from a cursor without gaps or duplicates.

use std::sync::Arc;

use tally::coordinator::storage::alerts::AlertStore;
use tally::item::Status::*;
use tally::proto::{self, alerts_client::AlertsClient};
use tally::reconcile::{AlertBody, AlertChange, AlertKey, AlertKind, Severity};
use tally::serial::{CanonicalRule, ItemKey};
use tally::snapshot::SnapshotDigest;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

async fn alerts_client(coord: &TestCoordinator) -> AlertsClient<Channel> {
    AlertsClient::connect(coord.url()).await.expect("connect")
}

fn store(coord: &TestCoordinator) -> Arc<AlertStore> {
    coord.reconciler.as_ref().expect("running").alerts().clone()
}

/// `n` synthetic "reported lost" alerts for serials S0.., opened directly in
/// the alert store (the engine's output format), so tests can make thousands.
fn synthetic(n: usize, from: usize) -> Vec<AlertChange> {
    let rule = CanonicalRule::default();
    (from..from + n)
        .map(|i| {
            let item = tally::item::Item::new("9M39", &format!("S{i}"), Lost, "", None, &rule)
                .expect("item");
            AlertChange::Opened {
                key: AlertKey {
                    kind: AlertKind::ReportedLost,
                    item: Some(ItemKey::clone(&item.key)),
                    state: Some(state("RUS")),
                    counterparty: None,
                    sequence: None,
                },
                body: AlertBody {
                    severity: Severity::Medium,
                    spellings: vec![format!("S{i}")],
                    states: vec![state("RUS")],
                    summary: format!("RUS reports 9M39/S{i} lost"),
                    evidence: Vec::new(),
                    custody: None,
                    seizures: Vec::new(),
                },
                by: None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_are_recorded_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut snaps = coord.client().await;
    submit(
        &mut snaps,
        &snapshot(
            "RUS",
            1,
            SnapshotDigest::GENESIS,
            &items(&[("9K38", "ка-0 12", InService, None)]),
        ),
    )
    .await
    .unwrap();
    submit(
        &mut snaps,
        &snapshot(
            "KAZ",
            1,
            SnapshotDigest::GENESIS,
            &items(&[("9K38", "KA012", InService, None)]),
        ),
    )
    .await
    .unwrap();

    let mut client = alerts_client(&coord).await;
    let list = client
        .list_alerts(proto::ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.alerts.len(), 1);
    let alert = &list.alerts[0];
    assert_eq!(alert.kind, "held_by_several_states");
    assert_eq!(
        (alert.model.as_str(), alert.serial.as_str()),
        ("9K38", "KA012")
    );
    assert_eq!(alert.states, ["KAZ", "RUS"]);
    assert_eq!(alert.status, proto::AlertStatus::Open as i32);
    assert_eq!(alert.evidence.len(), 2);
    let id = alert.id;

    let acked = client
        .acknowledge_alert(proto::AcknowledgeAlertRequest {
            id,
            note: "looking".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.status, proto::AlertStatus::Acknowledged as i32);

    // Resolving needs a reason from the fixed list.
    let err = client
        .resolve_alert(proto::ResolveAlertRequest {
            id,
            reason: 0,
            note: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("RESOLUTION_REASON_FALSE_POSITIVE = 1 (false_positive)"),
        "{}",
        err.message()
    );
    let err = client
        .resolve_alert(proto::ResolveAlertRequest {
            id,
            reason: 99,
            note: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A note stays in the history for good: too long a one is refused, and
    // the history check below shows that nothing was recorded.
    let err = client
        .resolve_alert(proto::ResolveAlertRequest {
            id,
            reason: proto::ResolutionReason::DataEntryError as i32,
            note: "й".repeat(513),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("note is 1026 bytes long"),
        "{}",
        err.message()
    );

    let resolved = client
        .resolve_alert(proto::ResolveAlertRequest {
            id,
            reason: proto::ResolutionReason::DataEntryError as i32,
            note: "KAZ typed a RUS serial".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status, proto::AlertStatus::Resolved as i32);

    // Acknowledging a resolved alert, resolving it again, unknown ids.
    let err = client
        .acknowledge_alert(proto::AcknowledgeAlertRequest {
            id,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("cannot be acknowledged"),
        "{}",
        err.message()
    );
    let err = client
        .resolve_alert(proto::ResolveAlertRequest {
            id,
            reason: proto::ResolutionReason::Located as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = client
        .resolve_alert(proto::ResolveAlertRequest {
            id: 999_999,
            reason: proto::ResolutionReason::Located as i32,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("999999"));
    let err = client
        .get_alert(proto::GetAlertRequest { id: 424_242 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let reopened = client
        .reopen_alert(proto::ReopenAlertRequest {
            id,
            note: "not a typo after all".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reopened.status, proto::AlertStatus::Open as i32);

    let full = client
        .get_alert(proto::GetAlertRequest { id })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<(&str, &str)> = full
        .history
        .iter()
        .map(|h| (h.action.as_str(), h.note.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("opened", "9K38/KA012 is held by KAZ, RUS"),
            ("acknowledged", "looking"),
            ("resolved", "KAZ typed a RUS serial"),
            ("reopened", "not a typo after all"),
        ]
    );
    assert_eq!(
        full.history[2].reason,
        proto::ResolutionReason::DataEntryError as i32
    );
    assert!(full.history.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert!(full.history.iter().all(|h| h.at_unix_ms > 0));
    // The opening names the snapshot that caused it (KAZ's, the second
    // holder); operator actions name none.
    let by: Vec<Option<(&str, u64)>> = full
        .history
        .iter()
        .map(|h| h.by.as_ref().map(|b| (b.state.as_str(), b.sequence)))
        .collect();
    assert_eq!(by, [Some(("KAZ", 1)), None, None, None]);

    // Filters: bad values are named; good ones select.
    let err = client
        .list_alerts(proto::ListAlertsRequest {
            kind: "missing_item".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("held_by_several_states"));
    let by_state = |s: &str| proto::ListAlertsRequest {
        state: s.into(),
        ..Default::default()
    };
    let mut c2 = client.clone();
    assert_eq!(
        c2.list_alerts(by_state("KAZ"))
            .await
            .unwrap()
            .into_inner()
            .alerts
            .len(),
        1
    );
    assert_eq!(
        c2.list_alerts(by_state("ARM"))
            .await
            .unwrap()
            .into_inner()
            .alerts
            .len(),
        0
    );
    let by_model = proto::ListAlertsRequest {
        model: "9k-38".into(),
        ..Default::default()
    };
    assert_eq!(
        c2.list_alerts(by_model)
            .await
            .unwrap()
            .into_inner()
            .alerts
            .len(),
        1
    );
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_ten_thousand_alerts_returns_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    store(&coord).apply(&synthetic(10_000, 0), 1).unwrap();
    let mut client = alerts_client(&coord).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_alerts(proto::ListAlertsRequest {
                page_size: 700,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for a in &page.alerts {
            assert!(seen.insert(a.id), "alert {} returned twice", a.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 10_000);
    assert_eq!(pages, 15);
    let err = client
        .list_alerts(proto::ListAlertsRequest {
            page_token: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    drop(client);
    coord.stop().await;
}

async fn collect(stream: &mut tonic::Streaming<proto::AlertEvent>, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let e = tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
            .await
            .expect("event within 20 s")
            .expect("stream ok")
            .expect("stream open");
        out.push(e.cursor);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_from_cursor_zero_gets_every_stored_event_then_live_ones_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS"]).await;
    let alerts = store(&coord);
    // 1,000 stored events, in several batches.
    for b in 0..10 {
        alerts.apply(&synthetic(100, b * 100), 1).unwrap();
    }
    let mut client = alerts_client(&coord).await;
    let mut w1 = client
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut w2 = client
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .unwrap()
        .into_inner();
    // Live events are committed while the watchers are still replaying.
    let writer = {
        let alerts = alerts.clone();
        tokio::task::spawn_blocking(move || {
            for b in 0..5 {
                alerts.apply(&synthetic(100, 1000 + b * 100), 2).unwrap();
            }
        })
    };
    let got1 = collect(&mut w1, 1500).await;
    let got2 = collect(&mut w2, 1500).await;
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=1500).collect();
    assert_eq!(got1, expected, "every event once, in order");
    assert_eq!(got2, expected, "two watchers see the same sequence");

    // Resuming from a cursor continues right after it.
    let mut w3 = client
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 1234 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        collect(&mut w3, 266).await,
        (1235..=1500).collect::<Vec<u64>>()
    );
    // A cursor beyond the newest event (from another store, or from before a
    // rebuild) is refused instead of silently skipping events.
    let err = client
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 1501 })
        .await
        .expect_err("a cursor from the future");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("newest alert event (1500)"),
        "{}",
        err.message()
    );
    drop((w1, w2, w3, client));
    coord.stop().await;
}

/// The cursor of the next event, waiting at most 30 s for it.
async fn next_cursor(stream: &mut tonic::Streaming<proto::AlertEvent>) -> u64 {
    tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")
        .expect("stream ok")
        .expect("stream open")
        .cursor
}

/// README, `WatchAlerts`: "stored events, then live ones, no gap, no
/// duplicate; a slow watcher re-reads storage instead of holding memory".
/// A watcher stops reading while three times the coordinator's live buffer
/// (4,096 events) is committed: ingestion does not wait for it, the
/// coordinator counts it as fallen behind (so the re-read from storage did
/// run), and once it reads again it gets every event exactly once, cursors
/// consecutive. Read past the expected end: the next event is the one
/// committed after it, not a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_held_back_past_the_live_buffer_rereads_storage_and_misses_or_repeats_nothing() {
    const EVENTS: usize = 3 * 4096;
    let dir = tempfile::tempdir().unwrap();
    let coordinator = assemble(dir.path(), &["RUS"], Default::default(), Default::default());
    let metrics = coordinator.metrics.clone();
    let coord = TestCoordinator::serve(coordinator).await;
    let alerts = store(&coord);
    // Small HTTP/2 windows, so that little of what the watcher does not
    // read can wait in the connection instead of the coordinator.
    let channel = tonic::transport::Endpoint::from_shared(coord.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let mut watcher = AlertsClient::new(channel)
        .watch_alerts(proto::WatchAlertsRequest { after_cursor: 0 })
        .await
        .unwrap()
        .into_inner();
    // Its first event shows the watcher is subscribed to live events (it
    // subscribes before it reads storage).
    alerts.apply(&synthetic(1, 0), 1).unwrap();
    assert_eq!(next_cursor(&mut watcher).await, 1);

    // Held back: nothing is read while the events are committed, and
    // committing does not wait for the watcher.
    let writer = {
        let alerts = alerts.clone();
        tokio::task::spawn_blocking(move || {
            for b in 0..EVENTS / 1024 {
                alerts.apply(&synthetic(1024, 1 + b * 1024), 2).unwrap();
            }
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), writer)
        .await
        .expect("ingestion does not wait for a watcher that does not read")
        .unwrap();
    assert_eq!(alerts.last_cursor(), 1 + EVENTS as u64);

    for expected in 2..=1 + EVENTS as u64 {
        assert_eq!(
            next_cursor(&mut watcher).await,
            expected,
            "every event once, in order"
        );
    }
    // One event past the end: the next one to arrive is the one committed
    // now, not a repeat of one already sent.
    alerts.apply(&synthetic(1, 1 + EVENTS), 3).unwrap();
    assert_eq!(next_cursor(&mut watcher).await, 2 + EVENTS as u64);
    let lagged = metric(&metrics, "tally_alert_watchers_lagged_total").expect("lag counter");
    assert!(
        lagged >= 1.0,
        "the watcher never fell behind the live buffer, so the re-read was not tested"
    );
    drop(watcher);
    coord.stop().await;
}
