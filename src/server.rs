//! Assembles and runs the coordinator's gRPC server.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::CoordinatorConfig;
use crate::ingest::Ingestor;
use crate::keys;
use crate::proto::snapshots_server::SnapshotsServer;
use crate::service::snapshots::SnapshotsService;
use crate::store::{SledStore, SnapshotStore, StoreError};

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
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Opens the store and loads the key named by `config`.
pub fn build_ingestor(config: &CoordinatorConfig) -> Result<Ingestor, ServerError> {
    let key = keys::read_signing_key(&config.key_file)?;
    let store = SledStore::open(&config.data_dir).map_err(|source| ServerError::Store {
        path: config.data_dir.clone(),
        source,
    })?;
    let store: Arc<dyn SnapshotStore> = Arc::new(store);
    Ok(Ingestor::new(
        store,
        config.members.iter().map(|m| (m.state, m.public_key)),
        key,
        config.limits.clone(),
        config.canonical.clone(),
    ))
}

/// Serves the coordinator on `listener` until `shutdown` completes.
pub async fn serve(
    ingestor: Ingestor,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let max_message = ingestor.limits().max_message_bytes;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SnapshotsServer<SnapshotsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let snapshots = SnapshotsServer::new(SnapshotsService::new(ingestor))
        .max_decoding_message_size(max_message);
    tracing::info!(addr = ?listener.local_addr().ok(), "coordinator serving");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(snapshots)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
