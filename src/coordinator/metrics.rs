//! Prometheus metrics of the coordinator, and the HTTP endpoint that serves
//! them (`GET /metrics`, OpenMetrics text format).
//!
//! Services hold an `Arc<Metrics>` and call one method per event; nothing
//! here touches the store except the scrape, which counts the current alerts
//! so the gauge is right from the first scrape after a restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::coordinator::storage::alerts::{AlertStore, AlertStoreError};
use crate::reconcile::AlertKind;

/// One label, e.g. `("reason", "failed_precondition")`.
type Label = [(&'static str, &'static str); 1];

/// What made the reconciler run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileTrigger {
    /// An accepted snapshot, reconciled before its receipt is returned.
    Submission,
    /// The timer that re-evaluates the clock-based rules.
    Clock,
}

impl ReconcileTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileTrigger::Submission => "submission",
            ReconcileTrigger::Clock => "clock",
        }
    }
}

/// The coordinator's metrics. One per coordinator, not a process global, so
/// several coordinators in one test process keep separate counts.
pub struct Metrics {
    registry: Registry,
    accepted: Counter,
    resubmitted: Counter,
    rejected: Family<Label, Counter>,
    items: Counter,
    ingest_seconds: Histogram,
    reconcile_seconds: Family<Label, Histogram, fn() -> Histogram>,
    alerts_open: Family<Label, Gauge>,
    watchers: Gauge,
    watchers_lagged: Counter,
    submissions_in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// 5 ms to about 82 s: a small snapshot over loopback up to millions of
/// items over a slow link.
fn ingest_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// 1 ms to about 33 s: an unchanged snapshot up to a full rebuild of the
/// holdings after a large change.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tally");
        let accepted = Counter::default();
        registry.register(
            "snapshots_accepted",
            "Snapshots accepted and stored (resubmissions of an accepted snapshot not counted)",
            accepted.clone(),
        );
        let resubmitted = Counter::default();
        registry.register(
            "snapshots_resubmitted",
            "Resubmissions of an already accepted snapshot, answered with the original receipt",
            resubmitted.clone(),
        );
        let rejected = Family::<Label, Counter>::default();
        registry.register(
            "snapshots_rejected",
            "Submissions refused, by reason (the gRPC status code, snake_case); nothing was stored",
            rejected.clone(),
        );
        let items = Counter::default();
        registry.register(
            "items_ingested",
            "Items in accepted snapshots",
            items.clone(),
        );
        let ingest_seconds = ingest_histogram();
        registry.register(
            "ingest_duration_seconds",
            "Accepted submissions: from the call's start to the durable commit",
            ingest_seconds.clone(),
        );
        let reconcile_seconds = Family::<Label, Histogram, fn() -> Histogram>::new_with_constructor(
            reconcile_histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconciliation runs, by trigger (submission or clock)",
            reconcile_seconds.clone(),
        );
        let alerts_open = Family::<Label, Gauge>::default();
        registry.register(
            "alerts_open",
            "Alerts whose condition currently holds (open, acknowledged or resolved, not cleared), by kind",
            alerts_open.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "alert_watchers",
            "WatchAlerts streams currently connected",
            watchers.clone(),
        );
        let watchers_lagged = Counter::default();
        registry.register(
            "alert_watchers_lagged",
            "Times a WatchAlerts stream fell behind the live event buffer and went back to reading stored events",
            watchers_lagged.clone(),
        );
        let submissions_in_flight = Gauge::default();
        registry.register(
            "submissions_in_flight",
            "Submit calls currently running (upload, verification, commit, reconciliation)",
            submissions_in_flight.clone(),
        );
        // Every kind is present from the start, at 0 until the first scrape
        // counts the store.
        for kind in AlertKind::ALL {
            alerts_open.get_or_create(&[("kind", kind.as_str())]).set(0);
        }
        Metrics {
            registry,
            accepted,
            resubmitted,
            rejected,
            items,
            ingest_seconds,
            reconcile_seconds,
            alerts_open,
            watchers,
            watchers_lagged,
            submissions_in_flight,
        }
    }

    /// A new snapshot of `items` items was stored, `elapsed` after the call began.
    pub(crate) fn snapshot_accepted(&self, items: u64, elapsed: Duration) {
        self.accepted.inc();
        self.items.inc_by(items);
        self.ingest_seconds.observe(elapsed.as_secs_f64());
    }

    /// An accepted snapshot was sent again and answered with its receipt.
    pub(crate) fn snapshot_resubmitted(&self) {
        self.resubmitted.inc();
    }

    /// A submission was refused with `code`.
    pub(crate) fn snapshot_rejected(&self, code: tonic::Code) {
        self.rejected
            .get_or_create(&[("reason", code_label(code))])
            .inc();
    }

    pub fn reconciled(&self, trigger: ReconcileTrigger, elapsed: Duration) {
        self.reconcile_seconds
            .get_or_create(&[("trigger", trigger.as_str())])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a watcher in until the returned guard is dropped.
    pub(crate) fn watcher_connected(&self) -> GaugeGuard {
        GaugeGuard::inc(&self.watchers)
    }

    /// A watcher fell behind the live buffer and re-reads stored events.
    pub(crate) fn watcher_lagged(&self) {
        self.watchers_lagged.inc();
    }

    /// Counts a submission in until the returned guard is dropped.
    pub(crate) fn submission_started(&self) -> GaugeGuard {
        GaugeGuard::inc(&self.submissions_in_flight)
    }

    /// Sets the open-alert gauge of every kind (kinds absent from `counts` to 0).
    pub(crate) fn set_open_alerts(&self, counts: &BTreeMap<AlertKind, u64>) {
        for kind in AlertKind::ALL {
            let n = counts.get(&kind).copied().unwrap_or(0);
            self.alerts_open
                .get_or_create(&[("kind", kind.as_str())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Holds one count in a gauge until dropped.
#[derive(Debug)]
pub(crate) struct GaugeGuard {
    gauge: Gauge,
}

impl GaugeGuard {
    fn inc(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard {
            gauge: gauge.clone(),
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The stable `reason` label of a rejection: the gRPC code in snake_case.
pub(crate) fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Counts the alerts whose condition currently holds, by kind (the same
/// count `tally status` shows).
pub(crate) fn open_alerts_by_kind(
    alerts: &AlertStore,
) -> Result<BTreeMap<AlertKind, u64>, AlertStoreError> {
    let mut counts = BTreeMap::new();
    for a in alerts.current_alerts()? {
        *counts.entry(a.key.kind).or_insert(0) += 1;
    }
    Ok(counts)
}

/// What the HTTP endpoint serves from.
#[derive(Clone)]
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub alerts: Arc<AlertStore>,
}

/// The content type of the OpenMetrics text format, which Prometheus reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(State(endpoint): State<Endpoint>) -> Response {
    let alerts = endpoint.alerts.clone();
    match tokio::task::spawn_blocking(move || open_alerts_by_kind(&alerts)).await {
        Ok(Ok(counts)) => endpoint.metrics.set_open_alerts(&counts),
        // A scrape that fails is visible in Prometheus (`up` = 0); a stale
        // gauge would not be.
        Ok(Err(e)) => {
            tracing::error!(error = %e, "metrics: cannot count open alerts");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot count open alerts: {e}\n"),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("metrics task failed: {e}\n"),
            )
                .into_response();
        }
    }
    match endpoint.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub(crate) async fn serve_http(
    endpoint: Endpoint,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(endpoint);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
    }

    #[test]
    fn counters_and_labels_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.snapshot_accepted(120, Duration::from_millis(30));
        metrics.snapshot_rejected(tonic::Code::FailedPrecondition);
        metrics.snapshot_rejected(tonic::Code::FailedPrecondition);
        metrics.reconciled(ReconcileTrigger::Clock, Duration::from_millis(2));
        let guard = metrics.watcher_connected();
        metrics.watcher_lagged();
        let submission = metrics.submission_started();
        let mut counts = BTreeMap::new();
        counts.insert(AlertKind::ReportedLost, 3);
        metrics.set_open_alerts(&counts);

        let text = metrics.encode().expect("encode");
        assert_eq!(
            line_value(&text, "tally_snapshots_accepted_total "),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "tally_items_ingested_total "),
            Some(120.0)
        );
        assert_eq!(
            line_value(
                &text,
                "tally_snapshots_rejected_total{reason=\"failed_precondition\"} "
            ),
            Some(2.0)
        );
        assert_eq!(
            line_value(&text, "tally_alerts_open{kind=\"reported_lost\"} "),
            Some(3.0)
        );
        assert_eq!(
            line_value(&text, "tally_alerts_open{kind=\"seized_item\"} "),
            Some(0.0)
        );
        assert_eq!(line_value(&text, "tally_alert_watchers "), Some(1.0));
        assert_eq!(
            line_value(&text, "tally_alert_watchers_lagged_total "),
            Some(1.0)
        );
        assert_eq!(line_value(&text, "tally_submissions_in_flight "), Some(1.0));
        assert_eq!(
            line_value(
                &text,
                "tally_reconcile_duration_seconds_count{trigger=\"clock\"} "
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "tally_ingest_duration_seconds_count "),
            Some(1.0)
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
        drop(guard);
        drop(submission);
        let text = metrics.encode().expect("encode");
        assert_eq!(line_value(&text, "tally_alert_watchers "), Some(0.0));
        assert_eq!(line_value(&text, "tally_submissions_in_flight "), Some(0.0));
    }

    #[test]
    fn every_code_has_a_distinct_label() {
        use std::collections::HashSet;
        let labels: HashSet<&str> = (0..=16)
            .map(|i| code_label(tonic::Code::from_i32(i)))
            .collect();
        assert_eq!(labels.len(), 17);
    }
}
