//! Assembles and runs the coordinator's gRPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::ServerTlsConfig;

use crate::access::AccessPolicy;
use crate::alerts::{AlertStore, AlertStoreError};
use crate::config::{CoordinatorConfig, Limits, Transport};
use crate::ingest::{Ingestor, now_unix_ms};
use crate::keys;
use crate::proto::alerts_server::AlertsServer;
use crate::proto::coordinator_server::CoordinatorServer;
use crate::proto::seizures_server::SeizuresServer;
use crate::proto::snapshots_server::SnapshotsServer;
use crate::proto::trace_server::TraceServer;
use crate::reconcile::EngineConfig;
use crate::reconciler::{ReconcileError, Reconciler};
use crate::seizures::{SeizureLog, SeizureLogError};
use crate::serial::CanonicalRule;
use crate::service::access::AccessLayer;
use crate::service::alerts::AlertsService;
use crate::service::operations::{CoordinatorService, SeizuresService};
use crate::service::snapshots::SnapshotsService;
use crate::service::trace::TraceService;
use crate::state::StateCode;
use crate::store::{SledStore, SnapshotStore, StoreError};
use crate::trace::Tracer;

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
    Tls(#[from] crate::tls::TlsError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("opening alerts: {0}")]
    Alerts(#[from] AlertStoreError),
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
}

/// Puts a coordinator together on an opened store: rebuilds the
/// reconciliation state from the stored snapshots before serving.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    store: SledStore,
    members: impl IntoIterator<Item = (StateCode, VerifyingKey)>,
    key: SigningKey,
    limits: Limits,
    rule: CanonicalRule,
    engine: EngineConfig,
    tick: Duration,
) -> Result<Coordinator, ServerError> {
    let alerts = Arc::new(AlertStore::open(store.db())?);
    let seizures = Arc::new(SeizureLog::open(store.db())?);
    let store: Arc<dyn SnapshotStore> = Arc::new(store);
    let reconciler = Arc::new(Reconciler::open(
        store.clone(),
        alerts,
        seizures,
        engine,
        now_unix_ms(),
    )?);
    Ok(Coordinator {
        ingestor: Ingestor::new(store, members, key, limits, rule.clone()),
        reconciler,
        tick,
        rule,
    })
}

/// Opens the store and loads the key named by `config`.
pub fn build_coordinator(config: &CoordinatorConfig) -> Result<Coordinator, ServerError> {
    let key = keys::read_signing_key(&config.key_file)?;
    let store = SledStore::open(&config.data_dir).map_err(|source| ServerError::Store {
        path: config.data_dir.clone(),
        source,
    })?;
    assemble(
        store,
        config.members.iter().map(|m| (m.state, m.public_key)),
        key,
        config.limits.clone(),
        config.canonical.clone(),
        config.engine_config(),
        Duration::from_secs(config.reconcile.tick_seconds),
    )
}

/// How the listener is secured and who may call what.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// TLS for the listener; `None` serves plaintext.
    pub tls: Option<ServerTlsConfig>,
    pub access: AccessPolicy,
}

impl ServeOptions {
    /// What a configuration asks for: TLS with checked roles, or plaintext
    /// (`insecure = true`) with a warning.
    pub fn from_config(config: &CoordinatorConfig) -> Result<ServeOptions, ServerError> {
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

/// Serves the coordinator on `listener` in plaintext with no access checks,
/// until `shutdown` completes: for tests and in-process use on loopback.
pub async fn serve(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_with(coordinator, listener, shutdown, ServeOptions::default()).await
}

/// Serves the coordinator on `listener` until `shutdown` completes.
pub async fn serve_with(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> Result<(), ServerError> {
    let max_message = coordinator.ingestor.limits().max_message_bytes;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SnapshotsServer<SnapshotsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let snapshots = SnapshotsServer::new(SnapshotsService::new(
        coordinator.ingestor.clone(),
        coordinator.reconciler.clone(),
    ))
    .max_decoding_message_size(max_message);
    let alerts = AlertsServer::new(AlertsService::new(
        coordinator.reconciler.alerts().clone(),
        coordinator.rule.clone(),
    ));
    let trace = TraceServer::new(TraceService::new(
        Arc::new(Tracer::new(coordinator.reconciler.clone())),
        coordinator.rule.clone(),
    ));

    let seizures = SeizuresServer::new(SeizuresService::new(
        coordinator.reconciler.clone(),
        coordinator.rule.clone(),
    ));
    let status = CoordinatorServer::new(CoordinatorService::new(
        coordinator.ingestor.clone(),
        coordinator.reconciler.clone(),
    ));

    // The clock-based rules run on a timer until shutdown.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let ticker = {
        let reconciler = coordinator.reconciler.clone();
        let period = coordinator.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let r = reconciler.clone();
                match tokio::task::spawn_blocking(move || r.tick(now_unix_ms())).await {
                    Ok(Ok(events)) if !events.is_empty() => {
                        tracing::info!(changes = events.len(), "clock-based rules changed alerts");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "clock-based reconciliation failed"),
                    Err(e) => tracing::error!(error = %e, "clock task failed"),
                }
            }
        })
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        tls = options.tls.is_some(),
        "coordinator serving"
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .layer(AccessLayer::new(options.access))
        .add_service(health)
        .add_service(reflection)
        .add_service(snapshots)
        .add_service(alerts)
        .add_service(seizures)
        .add_service(status)
        .add_service(trace)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    let _ = ticker.await;
    result?;
    Ok(())
}
