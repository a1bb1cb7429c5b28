//! Assembles and runs the coordinator's gRPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::ServerTlsConfig;

use crate::access::AccessPolicy;
use crate::coordinator::admission::Ingestor;
use crate::coordinator::grpc::snapshots::SnapshotsService;
use crate::coordinator::lifecycle::Lifecycle;
use crate::coordinator::metrics::{Metrics, ReconcileTrigger};
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::alerts::{AlertStore, AlertStoreError};
use crate::coordinator::storage::audit_log::{AuditLog, AuditStore};
use crate::coordinator::storage::seizures::SeizureLogError;
use crate::coordinator::storage::{Storage, StoreError};
use crate::proto::snapshots_server::SnapshotsServer;
use crate::reconcile::EngineConfig;
use crate::serial::CanonicalRule;
use crate::state::StateCode;
use crate::support::clock::Clock;
use crate::support::config::{CoordinatorConfig, Limits, Transport};
use crate::support::keys;

/// Why the coordinator could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("coordinator key: {0}")]
    Key(#[from] keys::KeyError),
    #[error("opening the store at {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::support::tls::TlsError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("opening alerts: {0}")]
    Alerts(#[from] AlertStoreError),
    #[error("opening the audit trail: {0}")]
    Audit(#[from] crate::coordinator::storage::audit_log::AuditLogError),
    #[error("opening seizure reports: {0}")]
    Seizures(#[from] SeizureLogError),
    #[error("rebuilding reconciliation state: {0}")]
    Reconcile(#[from] ReconcileError),
}

/// Everything the coordinator serves: ingestion and reconciliation.
#[derive(Clone)]
pub struct Coordinator {
    pub ingestor: Ingestor,
    pub reconciler: Arc<Reconciler>,
    /// How often the clock-based rules are re-evaluated.
    pub tick: Duration,
    /// The canonical rule, for requests that name items.
    pub rule: CanonicalRule,
    /// Counters and gauges for the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// How long shutdown waits for submissions in flight.
    pub shutdown_grace: Duration,
    /// How often the engine checkpoint is written while serving; `None`:
    /// only at a clean stop.
    pub checkpoint_every: Option<Duration>,
    /// The hash-chained audit trail, sealed with the coordinator's key.
    pub audit: Arc<dyn AuditStore>,
    /// The time every service reads: receipts, alert actions, audit
    /// records, seizure checks and the clock-based rules. The system clock
    /// unless assembled with another ([`assemble_with_clock`]) or set with
    /// [`Coordinator::set_clock`] (tests move a manual one instead of
    /// sleeping).
    pub clock: Clock,
    /// The stores it was assembled on, flushed last at shutdown.
    storage: Storage,
}

impl Coordinator {
    /// Makes every service, the ingestor's receipts and the clock-based
    /// rules read `clock` from now on.
    pub fn set_clock(&mut self, clock: Clock) {
        self.ingestor = self.ingestor.with_clock_of(clock.clone());
        self.clock = clock;
    }
}

/// Default of `shutdown.grace_seconds`.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Puts a coordinator together on opened storage: rebuilds the
/// reconciliation state from the stored snapshots before serving. `key`
/// signs receipts and seals audit records.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    storage: Storage,
    members: impl IntoIterator<Item = (StateCode, VerifyingKey)>,
    key: SigningKey,
    limits: Limits,
    rule: CanonicalRule,
    engine: EngineConfig,
    tick: Duration,
) -> Result<Coordinator, ServerError> {
    assemble_with_clock(
        storage,
        members,
        key,
        limits,
        rule,
        engine,
        tick,
        Clock::system(),
    )
}

/// As [`assemble`], reading the time from `clock` (from the rebuild of the
/// reconciliation state on).
#[allow(clippy::too_many_arguments)]
pub fn assemble_with_clock(
    storage: Storage,
    members: impl IntoIterator<Item = (StateCode, VerifyingKey)>,
    key: SigningKey,
    limits: Limits,
    rule: CanonicalRule,
    engine: EngineConfig,
    tick: Duration,
    clock: Clock,
) -> Result<Coordinator, ServerError> {
    let checkpoint = storage
        .dir()
        .map(|dir| dir.join(crate::coordinator::reconciler::CHECKPOINT_FILE));
    let audit = Arc::new(AuditLog::open(storage.audit.clone(), key.clone())?);
    let open_reconciler = || -> Result<Reconciler, ServerError> {
        let alerts = Arc::new(AlertStore::with_storage(storage.alerts.clone())?);
        Ok(Reconciler::open(
            storage.snapshots.clone(),
            alerts,
            storage.seizures.clone(),
            engine.clone(),
            clock.now_unix_ms(),
            checkpoint.clone(),
        )?)
    };
    let reconciler = match open_reconciler() {
        // The alerts are derived from the stored snapshots (all but the
        // operators' actions on them): unreadable alerts are moved aside and
        // rebuilt rather than keeping the coordinator down.
        Err(
            ServerError::Alerts(e @ AlertStoreError::Corrupt(_))
            | ServerError::Reconcile(ReconcileError::Alerts(e @ AlertStoreError::Corrupt(_))),
        ) => {
            let moved = storage.alerts.quarantine(clock.now_unix_ms())?;
            tracing::error!(
                error = %e,
                quarantined_to = ?moved,
                "persisted alerts are unreadable: moved aside and rebuilt from the stored \
                 snapshots; alert ids and event cursors start again, and operators' \
                 acknowledgements and resolutions must be re-entered (the originals are \
                 in the quarantined trees)"
            );
            open_reconciler()?
        }
        other => other?,
    };
    let reconciler = Arc::new(reconciler);
    Ok(Coordinator {
        ingestor: Ingestor::with_clock(
            storage.snapshots.clone(),
            members,
            key,
            limits,
            rule.clone(),
            clock.clone(),
        ),
        reconciler,
        tick,
        rule,
        metrics: Arc::new(Metrics::new()),
        shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        checkpoint_every: Some(Duration::from_secs(
            crate::support::config::DEFAULT_CHECKPOINT_SECONDS,
        )),
        audit,
        clock,
        storage,
    })
}

/// Opens the store and loads the key named by `config`.
pub(crate) fn build_coordinator(config: &CoordinatorConfig) -> Result<Coordinator, ServerError> {
    let key = keys::read_signing_key(&config.key_file)?;
    let storage = Storage::open_sled(&config.data_dir).map_err(|source| ServerError::Store {
        path: config.data_dir.clone(),
        source,
    })?;
    let mut coordinator = assemble(
        storage,
        config.members.iter().map(|m| (m.state, m.public_key)),
        key,
        config.limits.clone(),
        config.canonical.clone(),
        config.engine_config(),
        Duration::from_secs(config.reconcile.tick_seconds),
    )?;
    coordinator.shutdown_grace = Duration::from_secs(config.shutdown.grace_seconds);
    coordinator.checkpoint_every = match config.reconcile.checkpoint_seconds {
        0 => None,
        seconds => Some(Duration::from_secs(seconds)),
    };
    Ok(coordinator)
}

/// One span per RPC. Services fill in the fields that apply (state,
/// sequence, item count, alert id, item key, cursor), so every log line of
/// the request carries them.
fn rpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        state = tracing::field::Empty,
        sequence = tracing::field::Empty,
        items = tracing::field::Empty,
        alert_id = tracing::field::Empty,
        model = tracing::field::Empty,
        serial = tracing::field::Empty,
        after_cursor = tracing::field::Empty,
    )
}

/// How the listener is secured and who may call what.
#[derive(Debug)]
pub struct ServeOptions {
    /// TLS for the listener; `None` serves plaintext.
    pub tls: Option<ServerTlsConfig>,
    pub access: AccessPolicy,
}

impl Default for ServeOptions {
    /// Plaintext, no access checks.
    fn default() -> Self {
        ServeOptions {
            tls: None,
            access: AccessPolicy::open(),
        }
    }
}

impl ServeOptions {
    /// What a configuration asks for: TLS with checked roles, or plaintext
    /// (`insecure = true`) with a warning.
    pub(crate) fn from_config(config: &CoordinatorConfig) -> Result<ServeOptions, ServerError> {
        match &config.transport {
            Transport::Tls(files) => Ok(ServeOptions {
                tls: Some(files.server_config()?),
                access: AccessPolicy::enforced(config.operators.iter().cloned()),
            }),
            Transport::Insecure => {
                tracing::warn!(
                    "insecure = true: serving plaintext gRPC without client certificates; \
                     anyone who can reach the port can submit signed snapshots{}",
                    if config.operators.is_empty() {
                        " and act as an operator (no [[operators]] configured)"
                    } else {
                        ""
                    }
                );
                Ok(ServeOptions {
                    tls: None,
                    access: AccessPolicy::insecure(config.operators.iter().cloned()),
                })
            }
        }
    }
}

/// Serves the coordinator on `listener` in plaintext with no access checks
/// and no metrics endpoint, until `shutdown` completes, then shuts down
/// gracefully (see [`run`]): for tests and in-process use on loopback.
pub async fn serve(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    run(
        coordinator,
        listener,
        None,
        shutdown,
        ServeOptions::default(),
    )
    .await
}

/// Serves like [`serve`], with TLS and access rules from `options`.
pub async fn serve_with(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> Result<(), ServerError> {
    run(coordinator, listener, None, shutdown, options).await
}
/// Serves the coordinator on `listener`, and its metrics on
/// `metrics_listener` if given, until `shutdown` completes. Then, within the
/// coordinator's grace period:
///
/// 1. health turns NOT_SERVING, new submissions are refused (UNAVAILABLE),
///    watch streams end, the clock-based rules stop;
/// 2. submissions in flight may finish; at the end of the grace period the
///    ones still running are dropped (a dropped upload leaves nothing stored);
/// 3. the store is flushed.
pub async fn run(
    coordinator: Coordinator,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let lifecycle = Lifecycle::new();
    let (checkpointer, ticker) = spawn_timers(&coordinator, &lifecycle);

    // The metrics endpoint stays up while draining and stops with the server.
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = metrics_listener.map(|l| {
        let endpoint = crate::coordinator::metrics::Endpoint {
            metrics: coordinator.metrics.clone(),
            alerts: coordinator.reconciler.alerts().clone(),
        };
        tokio::spawn(crate::coordinator::metrics::serve_http(
            endpoint,
            l,
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });

    // The server keeps accepting connections while draining, so clients
    // see NOT_SERVING and UNAVAILABLE rather than a refused connection; it
    // stops accepting once the submissions in flight are done.
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        tls = options.tls.is_some(),
        "coordinator serving"
    );
    // Pings drop the connections of clients that vanished without closing
    // them, which would otherwise hold an upload slot or a snapshot reader.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::support::tls::KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::support::tls::KEEP_ALIVE_TIMEOUT));
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let (router, health_reporter) = crate::coordinator::grpc::router(
        builder.trace_fn(rpc_span),
        &coordinator,
        &lifecycle,
        options.access,
    )
    .await?;
    let server = router.serve_with_incoming_shutdown(without_nagle(listener), async {
        let _ = stopped.await;
    });
    tokio::pin!(server);

    let result = tokio::select! {
        r = &mut server => Some(r),
        _ = shutdown => None,
    };
    let result = match result {
        // The server failed before any shutdown was asked for.
        Some(r) => {
            lifecycle.start_draining();
            r
        }
        None => {
            drain(
                &mut server,
                &lifecycle,
                coordinator.shutdown_grace,
                &health_reporter,
                stop_accepting,
            )
            .await
        }
    };
    stop_background(ticker, checkpointer, metrics_stop, metrics_server).await;
    persist_and_flush(&coordinator).await;
    crate::coordinator::storage::drop_pinned(coordinator);
    result?;
    Ok(())
}

/// Runs `job` at `first` and then every `period` (a late run delays the
/// next) until shutdown begins.
/// The coordinator's timers, until shutdown begins: the engine checkpoint
/// (when configured; once more at the end of [`run`]) and the clock-based
/// rules (transfer grace periods, cadences).
fn spawn_timers(
    coordinator: &Coordinator,
    lifecycle: &Lifecycle,
) -> (
    Option<tokio::task::JoinHandle<()>>,
    tokio::task::JoinHandle<()>,
) {
    let lifecycle = lifecycle.clone();
    let checkpointer = coordinator.checkpoint_every.map(|period| {
        let reconciler = coordinator.reconciler.clone();
        let first = tokio::time::Instant::now() + period;
        until_draining(&lifecycle, first, period, move || {
            let r = reconciler.clone();
            write_checkpoint(move || r.write_checkpoint(true))
        })
    });

    // The clock-based rules run on a timer until shutdown begins.
    let ticker = {
        let reconciler = coordinator.reconciler.clone();
        let metrics = coordinator.metrics.clone();
        let clock = coordinator.clock.clone();
        let now = tokio::time::Instant::now();
        until_draining(&lifecycle, now, coordinator.tick, move || {
            let r = reconciler.clone();
            let metrics = metrics.clone();
            let clock = clock.clone();
            async move {
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || r.tick(clock.now_unix_ms())).await {
                    Ok(Ok(events)) => {
                        metrics.reconciled(ReconcileTrigger::Clock, started.elapsed());
                        if !events.is_empty() {
                            tracing::info!(
                                changes = events.len(),
                                "clock-based rules changed alerts"
                            );
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "clock-based reconciliation failed"),
                    Err(e) => tracing::error!(error = %e, "clock task failed"),
                }
            }
        })
    };
    (checkpointer, ticker)
}

/// Shutdown was asked for: refuse new submissions, end watch streams, wait
/// up to `grace` for the submissions in flight, then stop accepting.
async fn drain<S>(
    server: &mut S,
    lifecycle: &Lifecycle,
    grace: Duration,
    health_reporter: &tonic_health::server::HealthReporter,
    stop_accepting: tokio::sync::oneshot::Sender<()>,
) -> Result<(), tonic::transport::Error>
where
    S: Future<Output = Result<(), tonic::transport::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        grace_seconds = grace.as_secs_f64(),
        in_flight = lifecycle.in_flight(),
        "shutting down: refusing new submissions, ending watch streams"
    );
    health_reporter
        .set_not_serving::<SnapshotsServer<SnapshotsService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    lifecycle.start_draining();
    let early = tokio::select! {
        r = &mut *server => Some(r),
        _ = tokio::time::timeout_at(deadline, lifecycle.idle()) => None,
    };
    match early {
        Some(r) => r,
        None => {
            let _ = stop_accepting.send(());
            match tokio::time::timeout_at(deadline, server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        dropped_submissions = lifecycle.in_flight(),
                        "grace period over: dropping what is still in flight (nothing of it is stored)"
                    );
                    Ok(())
                }
            }
        }
    }
}

/// Waits for the timers to end and stops the metrics endpoint.
async fn stop_background(
    ticker: tokio::task::JoinHandle<()>,
    checkpointer: Option<tokio::task::JoinHandle<()>>,
    metrics_stop: tokio::sync::oneshot::Sender<()>,
    metrics_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) {
    let _ = ticker.await;
    if let Some(checkpointer) = checkpointer {
        let _ = checkpointer.await;
    }
    let _ = metrics_stop.send(());
    if let Some(mut m) = metrics_server {
        // A scraper's kept-alive connection may hold the endpoint open: stop
        // it anyway, so nothing holds the store after this returns.
        match tokio::time::timeout(Duration::from_secs(1), &mut m).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics endpoint failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics task failed"),
            Err(_) => m.abort(),
        }
    }
}

/// Nothing reconciles any more: keeps the engine's state for a fast start,
/// then flushes the store.
async fn persist_and_flush(coordinator: &Coordinator) {
    // Nothing reconciles any more: keep the engine's state for a fast start.
    let reconciler = coordinator.reconciler.clone();
    write_checkpoint(move || reconciler.write_checkpoint(false)).await;
    let storage = coordinator.storage.clone();
    match tokio::task::spawn_blocking(move || storage.flush()).await {
        Ok(Ok(_)) => tracing::info!("store flushed; coordinator stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "flushing the store at shutdown failed"),
        Err(e) => tracing::error!(error = %e, "flush task failed"),
    }
}

fn until_draining<F, Fut>(
    lifecycle: &Lifecycle,
    first: tokio::time::Instant,
    period: Duration,
    mut job: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lifecycle = lifecycle.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(first, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = lifecycle.draining() => break,
            }
            job().await;
        }
    })
}

/// Runs a checkpoint write off the async runtime and logs how it went.
async fn write_checkpoint(
    write: impl FnOnce() -> Result<Option<(std::path::PathBuf, u64)>, ReconcileError> + Send + 'static,
) {
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(write).await {
        Ok(Ok(Some((path, bytes)))) => tracing::info!(
            path = %path.display(),
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine checkpoint written"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::error!(
            error = %e,
            "could not write the engine checkpoint: a restart replays the snapshots since the \
             last one that was written (or all of them)"
        ),
        Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
    }
}

/// Accepted connections with Nagle's algorithm off. A unary answer goes out
/// as several small writes (headers, message, trailers); with Nagle on, the
/// later ones wait for the client's delayed acknowledgement of the first,
/// about 40 ms on Linux, which made every trace and alert query take 40 ms
/// or more. (tonic sets this itself only for listeners it binds.)
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not turn Nagle's algorithm off");
            }
        })
    })
}
