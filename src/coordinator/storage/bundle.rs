//! One backend's stores, opened together: [`Storage`], what the coordinator
//! (`server::assemble`) and export/import open, whatever the backend. Each
//! backend's constructor is in its own file: [`Storage::open_sled`] in
//! `sled_store`, [`Storage::in_memory`] in `memory`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::alerts::AlertStorage;
use super::audit_log::AuditTrail;
use super::seizures::SeizureStore;
use super::{SnapshotStore, StoreError};

/// Makes everything a backend's stores hold durable.
pub(crate) type Flush = Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

/// The stores of one backend, behind their traits.
#[derive(Clone)]
pub struct Storage {
    pub snapshots: Arc<dyn SnapshotStore>,
    pub seizures: Arc<dyn SeizureStore>,
    /// The trail the coordinator's `AuditLog` seals records into.
    pub audit: Arc<dyn AuditTrail>,
    /// Below the coordinator's `AlertStore`.
    pub alerts: Arc<dyn AlertStorage>,
    dir: Option<PathBuf>,
    flush: Flush,
}

impl Storage {
    /// Puts a backend's stores together: `dir` is where the store is on disk
    /// (`None`: nowhere), `flush` makes all of them durable.
    pub(super) fn new(
        snapshots: Arc<dyn SnapshotStore>,
        seizures: Arc<dyn SeizureStore>,
        audit: Arc<dyn AuditTrail>,
        alerts: Arc<dyn AlertStorage>,
        dir: Option<PathBuf>,
        flush: Flush,
    ) -> Storage {
        Storage {
            snapshots,
            seizures,
            audit,
            alerts,
            dir,
            flush,
        }
    }

    /// The directory the store is in, where the coordinator keeps files of
    /// its own beside it (the engine checkpoint); `None` for a store that is
    /// not on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Makes everything stored so far in every store durable (at shutdown,
    /// and at the end of an import).
    pub fn flush(&self) -> Result<(), StoreError> {
        (self.flush)()
    }
}
