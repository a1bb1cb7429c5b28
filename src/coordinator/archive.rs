//! Export and import of a coordinator's store as portable, verifiable files
//! (`tally export`, `tally import`; the format is in docs/archive.md).
//!
//! An export is evidence first: every snapshot as the exact bytes the state
//! signed (header encoding, signature, leaves in canonical order) with the
//! coordinator's receipt, plus what cannot be derived from snapshots: recorded
//! equivocations, seizure reports and operator actions on alerts. Alerts and
//! holdings are derived state and are rebuilt, not copied.
//!
//! Import trusts nothing in the export until it has checked it: file hashes
//! against the manifest, every state signature, receipt signature and chain
//! link, and every snapshot's leaves against its signed items root. It builds
//! the new store in a scratch directory next to the target and renames it
//! into place only when everything has been stored, so a refused import
//! leaves nothing behind.
//!
//! Replay: snapshots go through the store's normal commit path and the
//! reconciler, in the order of their receipts' acceptance times; recorded
//! equivocations, seizure reports and operator actions are interleaved at
//! their recorded times. The rebuilt alerts therefore get the same ids and
//! statuses as the original ones when the original coordinator reconciled
//! each snapshot as it arrived (it does, before answering a submission).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::SealedRecord;
use crate::coordinator::reconciler::{ReconcileError, Reconciler};
use crate::coordinator::storage::alerts::{
    AlertStore, AlertStoreError, EventKind, ResolutionReason,
};
use crate::coordinator::storage::seizures::{SeizureLogError, SeizureReport};
use crate::coordinator::storage::{
    Equivocation, SnapshotStore, Storage, StoreError, StoredSnapshot,
};
use crate::reconcile::{AlertKey, EngineConfig};
use crate::serial::CanonicalRule;
use crate::snapshot::leaf::leaf_bounds;
use crate::snapshot::{
    BadSignature, CHUNK_TARGET_BYTES, HEADER_LEN, ItemStreamVerifier, LeafError, Receipt,
    SignedHeader, SnapshotDigest, SnapshotHeader, VerifyError,
};
use crate::state::StateCode;
use crate::support::config::CoordinatorConfig;
use crate::support::keys::{self, KeyError};

/// Name of the manifest file at the top of an export.
pub(crate) const MANIFEST: &str = "manifest.json";
/// The manifest's `format` value.
pub(crate) const FORMAT: &str = "tally-export";
/// The manifest's `version` value this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Recorded equivocations (JSON array).
pub(crate) const EQUIVOCATIONS: &str = "equivocations.json";
/// Seizure reports (JSON array), oldest first.
pub(crate) const SEIZURE_REPORTS: &str = "seizure-reports.json";
/// Operator actions on alerts (JSON array), in their original order.
pub(crate) const OPERATOR_ACTIONS: &str = "operator-actions.json";
/// The audit trail (JSON array), record by record, as the coordinator sealed it.
pub(crate) const AUDIT_TRAIL: &str = "audit-trail.json";

/// The three files of one exported snapshot, as paths relative to the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// The 116-byte header encoding the state signed (docs/protocol.md §4.1).
    pub header: String,
    /// The leaf encodings, concatenated, in canonical order (§2.4, §2.5).
    pub items: String,
    /// The state's signature and the coordinator's receipt (JSON).
    pub signatures: String,
}

impl SnapshotFiles {
    pub fn new(state: StateCode, sequence: u64) -> SnapshotFiles {
        let base = format!("snapshots/{state}/{sequence:020}");
        SnapshotFiles {
            header: format!("{base}.header"),
            items: format!("{base}.items"),
            signatures: format!("{base}.json"),
        }
    }
}

/// `manifest.json`: what the export holds and the SHA-256 of every file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub exported_at_unix_ms: i64,
    /// The key that signed the receipts (64 hex digits).
    pub coordinator_public_key: String,
    /// Each member state's public key (64 hex digits).
    pub members: BTreeMap<StateCode, String>,
    /// The canonical-serial rule the leaves were checked with.
    pub canonical_rule: CanonicalRule,
    /// The time-based rules' settings, for rebuilding alerts.
    pub engine: EngineSettings,
    pub counts: Counts,
    /// Every snapshot, by state and sequence.
    pub snapshots: Vec<SnapshotEntry>,
    /// Every file of the export except the manifest itself.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub transfer_grace_ms: i64,
    pub cadence_ms: BTreeMap<StateCode, i64>,
}

impl From<&EngineConfig> for EngineSettings {
    fn from(c: &EngineConfig) -> Self {
        EngineSettings {
            transfer_grace_ms: c.transfer_grace_ms,
            cadence_ms: c.cadence_ms.clone(),
        }
    }
}

impl From<&EngineSettings> for EngineConfig {
    fn from(s: &EngineSettings) -> Self {
        EngineConfig {
            transfer_grace_ms: s.transfer_grace_ms,
            cadence_ms: s.cadence_ms.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub snapshots: u64,
    pub items: u64,
    pub equivocations: u64,
    pub seizure_reports: u64,
    pub operator_actions: u64,
    pub audit_records: u64,
}

/// One audit record in an export: the stored bytes, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportedAuditRecord {
    pub sequence: u64,
    /// The record's canonical encoding (`crate::audit`).
    pub encoding: String,
    /// SHA-256(previous record's hash || encoding).
    pub hash: String,
    /// The coordinator's signature of the hash.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub state: StateCode,
    pub sequence: u64,
    pub item_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the export directory, `/`-separated.
    pub path: String,
    /// SHA-256 of the file's bytes (64 hex digits).
    pub sha256: String,
    pub bytes: u64,
}

/// A snapshot's `.json` file: the state's signature and the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotSignatures {
    pub state: StateCode,
    pub sequence: u64,
    /// SHA-256 of the header file: the snapshot digest.
    pub digest: String,
    /// The state's Ed25519 signature over the header file's bytes.
    pub signature: String,
    pub accepted_at_unix_ms: i64,
    /// The coordinator's signature over the receipt encoding (§5.2).
    pub receipt_signature: String,
}

/// One entry of `equivocations.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EquivocationRecord {
    /// The conflicting header encoding (hex of the 116 bytes).
    pub header: String,
    pub signature: String,
    /// Digest of the accepted snapshot it conflicts with.
    pub conflicts_with: String,
    pub recorded_at_unix_ms: i64,
}

/// One entry of `operator-actions.json`: an operator acknowledged, resolved
/// or reopened an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorAction {
    /// The event cursor it had: the actions' original order.
    pub cursor: u64,
    pub at_unix_ms: i64,
    /// `acknowledged`, `resolved` or `reopened`.
    pub action: EventKind,
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResolutionReason>,
    /// The alert's id in the exporting store (for people: import finds the
    /// alert by its condition, `alert`).
    pub alert_id: u64,
    /// The alert's identity: kind, item key, state, counterparty, sequence.
    pub alert: AlertKey,
}

/// What `export` needs besides the store: the keys that make the export
/// verifiable on its own, and the settings to rebuild alerts with.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub coordinator_key: VerifyingKey,
    pub members: BTreeMap<StateCode, VerifyingKey>,
    pub canonical: CanonicalRule,
    pub engine: EngineConfig,
}

impl ExportSettings {
    /// The settings of a coordinator configuration (reads its key file).
    pub(crate) fn from_config(config: &CoordinatorConfig) -> Result<ExportSettings, KeyError> {
        Ok(ExportSettings {
            coordinator_key: keys::read_signing_key(&config.key_file)?.verifying_key(),
            members: config
                .members
                .iter()
                .map(|m| (m.state, m.public_key))
                .collect(),
            canonical: config.canonical.clone(),
            engine: config.engine_config(),
        })
    }
}

/// What an export or import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub counts: Counts,
    /// Operator actions an import could not re-apply, with the reason (the
    /// alert's condition did not hold at that moment of the replay).
    pub skipped_actions: Vec<String>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "the data directory {dir} is in use by a running coordinator (the store is locked): stop the coordinator first, then export"
    )]
    InUse { dir: PathBuf },
    #[error("{dir} holds no Tally store (no sled database in it)")]
    NotAStore { dir: PathBuf },
    #[error("{dir} is not empty: export writes into a new or empty directory")]
    OutputNotEmpty { dir: PathBuf },
    #[error(
        "the store holds snapshots of {state}, which has no public key in the configuration: add it to [[members]] so that the export can be verified"
    )]
    UnknownMember { state: StateCode },
    #[error(
        "stored snapshot {state} {sequence} is damaged: {reason}. Nothing was exported; \
         restore the store from a backup or an earlier export"
    )]
    Damaged {
        state: StateCode,
        sequence: u64,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    #[error("reading alerts: {0}")]
    Alerts(#[from] AlertStoreError),
    #[error("reading seizure reports: {0}")]
    Seizures(#[from] SeizureLogError),
    #[error("reading the audit trail: {0}")]
    Audit(#[from] crate::coordinator::storage::audit_log::AuditLogError),
}

/// What is wrong with one file of an export.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("listed in the manifest but missing")]
    Missing,
    #[error("not listed in the manifest")]
    Unlisted,
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is {actual} bytes but the manifest says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("SHA-256 is {actual} but the manifest says {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("its digest is {actual} but {signatures} was signed for {expected}")]
    DigestMismatch {
        actual: String,
        expected: String,
        signatures: String,
    },
    #[error("malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    #[error("the receipt signature does not verify with the coordinator's public key")]
    BadReceipt,
    #[error("items do not match the signed header: {0}")]
    Items(#[from] VerifyError),
    #[error("breaks the chain: {0}")]
    Chain(String),
}

/// Why an import was refused or failed. Nothing is left in the target
/// directory in any case.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{dir} is not empty: import builds a fresh store in a new or empty directory")]
    TargetNotEmpty { dir: PathBuf },
    #[error("{path}: {problem}")]
    File { path: String, problem: FileProblem },
    #[error(
        "the export's {what} differs from the configuration's: this export is not from this deployment"
    )]
    KeyMismatch { what: String },
    #[error(
        "the export has member state {state}, which the configuration does not list, so its \
         public key cannot be checked: import with a configuration that lists {state} (the one \
         the export was made with), or without one to trust the keys in the export"
    )]
    UnknownMember { state: StateCode },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the new store: {0}")]
    Store(#[from] StoreError),
    #[error("writing alerts: {0}")]
    Alerts(#[from] AlertStoreError),
    #[error("writing seizure reports: {0}")]
    Seizures(#[from] SeizureLogError),
    #[error("writing the audit trail: {0}")]
    Audit(#[from] crate::coordinator::storage::audit_log::AuditLogError),
    #[error("rebuilding alerts: {0}")]
    Reconcile(#[from] ReconcileError),
}

fn file_err(path: &str, problem: FileProblem) -> ImportError {
    ImportError::File {
        path: path.to_string(),
        problem,
    }
}

fn malformed(path: &str, what: impl Into<String>) -> ImportError {
    file_err(path, FileProblem::Malformed(what.into()))
}

fn io_err<E>(
    path: &Path,
    make: impl FnOnce(PathBuf, std::io::Error) -> E,
) -> impl FnOnce(std::io::Error) -> E {
    let path = path.to_path_buf();
    move |source| make(path, source)
}

fn export_io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    io_err(path, |path, source| ExportError::Io { path, source })
}

fn import_io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError {
    io_err(path, |path, source| ImportError::Io { path, source })
}

/// Whether `dir` is absent or an empty directory; an error if it cannot be
/// told (not a directory, not readable), for the caller to name.
fn absent_or_empty(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Syncs every directory under `root` (and `root`), so that the entries of
/// a finished scratch tree survive a power loss once it is renamed.
fn sync_dirs(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    File::open(root)?.sync_all()
}

/// A scratch directory next to `target` (same file system, so the final
/// rename is atomic), removed when dropped unless renamed into place.
fn scratch_next_to(target: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    // An existing empty target on another file system (a mount point, such
    // as a container volume) could not take the rename at the end: say so
    // now, not after all the work.
    if target.is_dir() && !same_file_system(target, &parent)? {
        return Err(std::io::Error::other(format!(
            "it is on another file system than its parent directory (a mount point, such as \
             a container volume), and the result is built beside it and renamed into place: \
             name a new directory inside it instead, e.g. {}",
            target.join("store").display()
        )));
    }
    tempfile::Builder::new().prefix(prefix).tempdir_in(parent)
}

/// Whether two existing paths are on the same file system (device).
fn same_file_system(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(a)?.dev() == std::fs::metadata(b)?.dev())
}

/// Moves a finished scratch directory to `target` (which is absent or an
/// empty directory: `rename` replaces an empty directory).
fn move_into_place(scratch: tempfile::TempDir, target: &Path) -> std::io::Result<()> {
    sync_dirs(scratch.path())?;
    std::fs::rename(scratch.path(), target)?;
    let _ = scratch.keep();
    // Done: the result is in place. Failing to sync its parent directory
    // only leaves the rename less durable, not undone, so an error here
    // must not report the whole operation as failed (nothing written).
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = File::open(parent).and_then(|dir| dir.sync_all())
    {
        tracing::warn!(dir = %parent.display(), error = %e, "could not sync the directory after the rename");
    }
    Ok(())
}

/// A file being written and hashed at once.
struct HashedFile {
    relative: String,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl HashedFile {
    fn create(root: &Path, relative: &str) -> Result<HashedFile, ExportError> {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(export_io(parent))?;
        }
        let file = File::create(&path).map_err(export_io(&path))?;
        Ok(HashedFile {
            relative: relative.to_string(),
            path,
            file,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.file.write_all(bytes).map_err(export_io(&self.path))?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> Result<FileEntry, ExportError> {
        self.file.sync_all().map_err(export_io(&self.path))?;
        Ok(FileEntry {
            path: self.relative,
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
        })
    }
}

fn write_file(root: &Path, relative: &str, bytes: &[u8]) -> Result<FileEntry, ExportError> {
    let mut f = HashedFile::create(root, relative)?;
    f.write(bytes)?;
    f.finish()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs (string keys, no maps with non-string
    // keys) cannot fail.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Opens the store for export, telling "a coordinator has it open" apart.
fn open_for_export(data_dir: &Path) -> Result<Storage, ExportError> {
    if !data_dir.join("db").is_file() {
        return Err(ExportError::NotAStore {
            dir: data_dir.to_path_buf(),
        });
    }
    Storage::open_sled(data_dir).map_err(|e| match e {
        StoreError::InUse { .. } => ExportError::InUse {
            dir: data_dir.to_path_buf(),
        },
        other => ExportError::Store(other),
    })
}

/// Writes everything stored in `data_dir` to the new directory `out`.
///
/// The store must not be open elsewhere (sled allows one process); a
/// running coordinator makes this fail with [`ExportError::InUse`].
pub fn export(
    data_dir: &Path,
    settings: &ExportSettings,
    out: &Path,
    now_unix_ms: i64,
) -> Result<Summary, ExportError> {
    if !absent_or_empty(out).map_err(export_io(out))? {
        return Err(ExportError::OutputNotEmpty {
            dir: out.to_path_buf(),
        });
    }
    let storage = open_for_export(data_dir)?;
    let store = storage.snapshots.as_ref();
    let scratch = scratch_next_to(out, ".tally-export-").map_err(export_io(out))?;
    let root = scratch.path();
    let mut files = Vec::new();
    let mut snapshots = Vec::new();
    let mut counts = Counts::default();

    for state in store.states()? {
        if !settings.members.contains_key(&state) {
            return Err(ExportError::UnknownMember { state });
        }
        for s in store.list(state, 1, usize::MAX)? {
            let header = &s.signed.header;
            let paths = SnapshotFiles::new(state, header.sequence);
            files.push(write_file(root, &paths.header, &header.encode())?);
            let signatures = SnapshotSignatures {
                state,
                sequence: header.sequence,
                digest: s.digest.to_hex(),
                signature: hex::encode(s.signed.signature.to_bytes()),
                accepted_at_unix_ms: s.receipt.accepted_at_unix_ms,
                receipt_signature: hex::encode(s.receipt.signature.to_bytes()),
            };
            files.push(write_file(root, &paths.signatures, &to_json(&signatures))?);
            // Checked against the signed header as they are copied: a store
            // damaged on disk must not give a backup that only import, maybe
            // after the store is gone, finds broken.
            let mut verifier = ItemStreamVerifier::new(header, settings.canonical.clone());
            let damaged = |reason: String| ExportError::Damaged {
                state,
                sequence: header.sequence,
                reason,
            };
            let mut items = HashedFile::create(root, &paths.items)?;
            for chunk in store.chunks(&s)? {
                let chunk = chunk.map_err(|e| damaged(e.to_string()))?;
                verifier
                    .push_chunk(&chunk)
                    .map_err(|e| damaged(e.to_string()))?;
                items.write(&chunk)?;
            }
            verifier.finish().map_err(|e| damaged(e.to_string()))?;
            files.push(items.finish()?);
            snapshots.push(SnapshotEntry {
                state,
                sequence: header.sequence,
                item_count: header.item_count,
            });
            counts.snapshots += 1;
            counts.items += header.item_count;
        }
    }

    let equivocations: Vec<EquivocationRecord> = store
        .equivocations()?
        .iter()
        .map(|e| EquivocationRecord {
            header: hex::encode(e.signed.header.encode()),
            signature: hex::encode(e.signed.signature.to_bytes()),
            conflicts_with: e.conflicts_with.to_hex(),
            recorded_at_unix_ms: e.recorded_at_unix_ms,
        })
        .collect();
    counts.equivocations = equivocations.len() as u64;
    files.push(write_file(root, EQUIVOCATIONS, &to_json(&equivocations))?);

    let reports = storage.seizures.all()?;
    counts.seizure_reports = reports.len() as u64;
    files.push(write_file(root, SEIZURE_REPORTS, &to_json(&reports))?);

    let actions = operator_actions(&AlertStore::with_storage(storage.alerts.clone())?)?;
    counts.operator_actions = actions.len() as u64;
    files.push(write_file(root, OPERATOR_ACTIONS, &to_json(&actions))?);

    let trail: Vec<ExportedAuditRecord> = storage
        .audit
        .all()?
        .iter()
        .map(|r| ExportedAuditRecord {
            sequence: r.sequence,
            encoding: hex::encode(&r.encoding),
            hash: hex::encode(&r.hash),
            signature: hex::encode(&r.signature),
        })
        .collect();
    counts.audit_records = trail.len() as u64;
    files.push(write_file(root, AUDIT_TRAIL, &to_json(&trail))?);

    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        exported_at_unix_ms: now_unix_ms,
        coordinator_public_key: hex::encode(settings.coordinator_key.to_bytes()),
        members: settings
            .members
            .iter()
            .map(|(s, k)| (*s, hex::encode(k.to_bytes())))
            .collect(),
        canonical_rule: settings.canonical.clone(),
        engine: EngineSettings::from(&settings.engine),
        counts,
        snapshots,
        files,
    };
    write_file(root, MANIFEST, &to_json(&manifest))?;
    drop(storage);
    move_into_place(scratch, out).map_err(export_io(out))?;
    Ok(Summary {
        counts,
        skipped_actions: Vec::new(),
    })
}

/// Every acknowledge, resolve and reopen in the alert histories, in the
/// order they happened (their event cursors).
fn operator_actions(alerts: &AlertStore) -> Result<Vec<OperatorAction>, AlertStoreError> {
    let mut out = Vec::new();
    for alert in alerts.all()? {
        for h in &alert.history {
            if matches!(
                h.action,
                EventKind::Acknowledged | EventKind::Resolved | EventKind::Reopened
            ) {
                out.push(OperatorAction {
                    cursor: h.cursor,
                    at_unix_ms: h.at_unix_ms,
                    action: h.action,
                    note: h.note.clone(),
                    reason: h.reason,
                    alert_id: alert.id,
                    alert: alert.key.clone(),
                });
            }
        }
    }
    out.sort_by_key(|a| a.cursor);
    Ok(out)
}

/// The keys an import must find in the export: those of the deployment the
/// new store is for (from its coordinator configuration).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The coordinator's public key, if known: the receipts must verify with it.
    pub coordinator_key: Option<VerifyingKey>,
    /// Member keys, if known: each state in the export must have this key.
    pub members: BTreeMap<StateCode, VerifyingKey>,
    /// Engine settings for rebuilding alerts (default: the export's).
    pub engine: Option<EngineConfig>,
}

impl ImportOptions {
    pub(crate) fn from_config(config: &CoordinatorConfig) -> Result<ImportOptions, KeyError> {
        let settings = ExportSettings::from_config(config)?;
        Ok(ImportOptions {
            coordinator_key: Some(settings.coordinator_key),
            members: settings.members,
            engine: Some(settings.engine),
        })
    }
}

fn parse_hex<const N: usize>(path: &str, what: &str, s: &str) -> Result<[u8; N], ImportError> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| malformed(path, format!("{what} is not {} hex digits", 2 * N)))
}

fn parse_key(path: &str, what: &str, s: &str) -> Result<VerifyingKey, ImportError> {
    VerifyingKey::from_bytes(&parse_hex::<32>(path, what, s)?)
        .map_err(|_| malformed(path, format!("{what} is not an Ed25519 public key")))
}

fn read_json<T: for<'de> Deserialize<'de>>(root: &Path, relative: &str) -> Result<T, ImportError> {
    let bytes = std::fs::read(root.join(relative)).map_err(|e| {
        let problem = if e.kind() == std::io::ErrorKind::NotFound {
            FileProblem::Missing
        } else {
            FileProblem::Unreadable(e)
        };
        file_err(relative, problem)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(relative, e.to_string()))
}

/// Returns true if and only if `p` is a plain relative path inside the export.
fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'))
}

/// Checks that the export holds exactly the manifest's files, with the
/// sizes and SHA-256 it names.
fn check_files(root: &Path, manifest: &Manifest) -> Result<(), ImportError> {
    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !safe_relative(&f.path) || f.path == MANIFEST {
            return Err(malformed(
                MANIFEST,
                format!("file path {:?} is not allowed", f.path),
            ));
        }
        if !listed.insert(f.path.as_str()) {
            return Err(malformed(MANIFEST, format!("{} is listed twice", f.path)));
        }
    }
    // A snapshot's files without its entry would be hashed and then
    // ignored: the end of a chain dropped in silence.
    let of_snapshots: BTreeSet<String> = manifest
        .snapshots
        .iter()
        .flat_map(|e| {
            let files = SnapshotFiles::new(e.state, e.sequence);
            [files.header, files.items, files.signatures]
        })
        .collect();
    if let Some(stray) = listed
        .iter()
        .find(|p| p.starts_with("snapshots/") && !of_snapshots.contains(**p))
    {
        return Err(malformed(
            MANIFEST,
            format!("{stray} is not a file of any snapshot in the manifest's snapshot list"),
        ));
    }
    let mut present = Vec::new();
    list_files(root, root, &mut present)?;
    for p in &present {
        if p != MANIFEST && !listed.contains(p.as_str()) {
            return Err(file_err(p, FileProblem::Unlisted));
        }
    }
    for f in &manifest.files {
        let path = root.join(&f.path);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(file_err(&f.path, FileProblem::Missing));
            }
            Err(e) => return Err(file_err(&f.path, FileProblem::Unreadable(e))),
        };
        let actual = file
            .metadata()
            .map_err(|e| file_err(&f.path, FileProblem::Unreadable(e)))?
            .len();
        if actual != f.bytes {
            return Err(file_err(
                &f.path,
                FileProblem::SizeMismatch {
                    expected: f.bytes,
                    actual,
                },
            ));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| file_err(&f.path, FileProblem::Unreadable(e)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != f.sha256 {
            return Err(file_err(
                &f.path,
                FileProblem::HashMismatch {
                    expected: f.sha256.clone(),
                    actual,
                },
            ));
        }
    }
    Ok(())
}

/// Every file under `dir`, as `/`-separated paths relative to `root`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), ImportError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(import_io(dir))?
        .collect::<Result<_, _>>()
        .map_err(import_io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type().map_err(import_io(&path))?.is_dir() {
            list_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.push(
                relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    Ok(())
}

/// A snapshot whose header, signature and receipt have been checked; its
/// items are checked as they are stored.
struct CheckedSnapshot {
    record: StoredSnapshot,
    items_path: String,
}

/// Reads and checks one snapshot's header and signatures.
fn check_snapshot(
    root: &Path,
    entry: &SnapshotEntry,
    members: &BTreeMap<StateCode, VerifyingKey>,
    coordinator: &VerifyingKey,
) -> Result<CheckedSnapshot, ImportError> {
    let paths = SnapshotFiles::new(entry.state, entry.sequence);
    let bytes = std::fs::read(root.join(&paths.header))
        .map_err(|e| file_err(&paths.header, FileProblem::Unreadable(e)))?;
    let header = SnapshotHeader::decode(&bytes).ok_or_else(|| {
        malformed(
            &paths.header,
            format!("not a {HEADER_LEN}-byte snapshot header encoding (docs/protocol.md §4.1)"),
        )
    })?;
    if header.state != entry.state || header.sequence != entry.sequence {
        return Err(malformed(
            &paths.header,
            format!(
                "it is {} sequence {}, not the {} sequence {} its name and the manifest say",
                header.state, header.sequence, entry.state, entry.sequence
            ),
        ));
    }
    if header.item_count != entry.item_count {
        return Err(malformed(
            MANIFEST,
            format!(
                "{} sequence {} has {} items, not {}",
                entry.state, entry.sequence, header.item_count, entry.item_count
            ),
        ));
    }
    let sigs: SnapshotSignatures = read_json(root, &paths.signatures)?;
    let digest = header.digest();
    if sigs.state != header.state || sigs.sequence != header.sequence {
        return Err(malformed(
            &paths.signatures,
            format!(
                "it is for {} sequence {}, not {} sequence {}",
                sigs.state, sigs.sequence, header.state, header.sequence
            ),
        ));
    }
    if sigs.digest != digest.to_hex() {
        return Err(file_err(
            &paths.header,
            FileProblem::DigestMismatch {
                actual: digest.to_hex(),
                expected: sigs.digest,
                signatures: paths.signatures,
            },
        ));
    }
    let key = members
        .get(&header.state)
        .ok_or_else(|| malformed(MANIFEST, format!("no public key for {}", header.state)))?;
    let signed = SignedHeader {
        header,
        signature: Signature::from_bytes(&parse_hex::<64>(
            &paths.signatures,
            "signature",
            &sigs.signature,
        )?),
    };
    signed
        .verify(key)
        .map_err(|e| file_err(&paths.signatures, e.into()))?;
    let receipt = Receipt {
        state: header.state,
        sequence: header.sequence,
        digest,
        accepted_at_unix_ms: sigs.accepted_at_unix_ms,
        signature: Signature::from_bytes(&parse_hex::<64>(
            &paths.signatures,
            "receipt_signature",
            &sigs.receipt_signature,
        )?),
    };
    if !receipt.verify(coordinator) {
        return Err(file_err(&paths.signatures, FileProblem::BadReceipt));
    }
    Ok(CheckedSnapshot {
        record: StoredSnapshot {
            signed,
            digest,
            receipt,
            // Both set when the snapshot is stored.
            upload: crate::coordinator::storage::UploadId(0),
            chunk_count: 0,
        },
        items_path: paths.items,
    })
}

/// Checks each state's snapshots form an unbroken chain from sequence 1.
fn check_chains(snapshots: &[CheckedSnapshot]) -> Result<(), ImportError> {
    let mut last: HashMap<StateCode, (u64, SnapshotDigest)> = HashMap::new();
    for s in snapshots {
        let h = &s.record.signed.header;
        let (sequence, digest) = last
            .get(&h.state)
            .copied()
            .unwrap_or((0, SnapshotDigest::GENESIS));
        let path = SnapshotFiles::new(h.state, h.sequence).header;
        if h.sequence != sequence + 1 {
            return Err(file_err(
                &path,
                FileProblem::Chain(format!(
                    "{} sequence {} follows sequence {sequence}",
                    h.state, h.sequence
                )),
            ));
        }
        if h.previous_digest != digest {
            return Err(file_err(
                &path,
                FileProblem::Chain(format!(
                    "it names previous digest {} but {} sequence {sequence} has digest {digest}",
                    h.previous_digest, h.state
                )),
            ));
        }
        last.insert(h.state, (h.sequence, s.record.digest));
    }
    Ok(())
}

/// Parses and checks the recorded equivocations: each is signed by its state
/// and conflicts with a snapshot of that state's chain.
fn check_equivocations(
    records: &[EquivocationRecord],
    members: &BTreeMap<StateCode, VerifyingKey>,
    snapshots: &[CheckedSnapshot],
) -> Result<Vec<Equivocation>, ImportError> {
    let chain: BTreeMap<(StateCode, u64), SnapshotDigest> = snapshots
        .iter()
        .map(|s| {
            let h = &s.record.signed.header;
            ((h.state, h.sequence), s.record.digest)
        })
        .collect();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let what = |field: &str| format!("entry {i}: {field}");
            let header =
                SnapshotHeader::decode(&parse_hex::<HEADER_LEN>(EQUIVOCATIONS, &what("header"), &r.header)?)
                    .ok_or_else(|| malformed(EQUIVOCATIONS, what("header is not a header encoding")))?;
            let signed = SignedHeader {
                header,
                signature: Signature::from_bytes(&parse_hex::<64>(
                    EQUIVOCATIONS,
                    &what("signature"),
                    &r.signature,
                )?),
            };
            let key = members.get(&header.state).ok_or_else(|| {
                malformed(MANIFEST, format!("no public key for {}", header.state))
            })?;
            signed.verify(key).map_err(|e| {
                malformed(EQUIVOCATIONS, format!("entry {i}: {e}"))
            })?;
            let conflicts_with = SnapshotDigest(parse_hex::<32>(
                EQUIVOCATIONS,
                &what("conflicts_with"),
                &r.conflicts_with,
            )?);
            let same = chain.get(&(header.state, header.sequence));
            let previous = match header.sequence {
                0 | 1 => Some(&SnapshotDigest::GENESIS),
                n => chain.get(&(header.state, n - 1)),
            };
            if same != Some(&conflicts_with) && previous != Some(&conflicts_with) {
                return Err(malformed(
                    EQUIVOCATIONS,
                    format!(
                        "entry {i}: {} sequence {} conflicts with {conflicts_with}, which is not in {}'s chain",
                        header.state, header.sequence, header.state
                    ),
                ));
            }
            // What the coordinator records (see `Ingestor::admit`): another
            // snapshot for an accepted sequence, or a next one that does not
            // link to the head. A copy of an accepted header would accuse a
            // state of an equivocation it never made.
            let conflict = same == Some(&conflicts_with) && signed.digest() != conflicts_with;
            let fork = previous == Some(&conflicts_with) && header.previous_digest != conflicts_with;
            if !conflict && !fork {
                return Err(malformed(
                    EQUIVOCATIONS,
                    format!(
                        "entry {i}: {} sequence {} does not conflict with {conflicts_with}: it is \
                         that snapshot, or links to it as the next one should",
                        header.state, header.sequence
                    ),
                ));
            }
            Ok(Equivocation {
                signed,
                conflicts_with,
                recorded_at_unix_ms: r.recorded_at_unix_ms,
            })
        })
        .collect()
}

/// Feeds the leaves of an items file to `push` in chunks of about
/// [`CHUNK_TARGET_BYTES`], each ending on a leaf boundary. A damaged tail is
/// passed on as it is, for the verifier to name what is wrong with it.
fn stream_leaves(
    path: &Path,
    mut push: impl FnMut(&[u8]) -> Result<(), ImportError>,
) -> std::io::Result<Result<(), ImportError>> {
    let mut file = File::open(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_TARGET_BYTES + (1 << 16));
    let mut read = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut read)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&read[..n]);
        if buf.len() >= CHUNK_TARGET_BYTES {
            let mut end = 0;
            let damaged = loop {
                match leaf_bounds(&buf[end..]) {
                    Ok(b) => end += b.len,
                    Err(LeafError::Truncated) => break false,
                    Err(_) => break true,
                }
            };
            let end = if damaged { buf.len() } else { end };
            if end > 0 {
                if let Err(e) = push(&buf[..end]) {
                    return Ok(Err(e));
                }
                buf.drain(..end);
            }
        }
    }
    if !buf.is_empty()
        && let Err(e) = push(&buf)
    {
        return Ok(Err(e));
    }
    Ok(Ok(()))
}

/// One thing to replay, at its original time.
enum Step<'a> {
    Snapshot(&'a CheckedSnapshot),
    Equivocation(&'a Equivocation),
    Seizure(&'a SeizureReport),
    Action(&'a OperatorAction),
}

/// Builds a fresh store in `data_dir` (absent or empty) from the export in
/// `from`, verifying everything on the way.
pub fn import(
    from: &Path,
    data_dir: &Path,
    options: &ImportOptions,
) -> Result<Summary, ImportError> {
    if !absent_or_empty(data_dir).map_err(import_io(data_dir))? {
        return Err(ImportError::TargetNotEmpty {
            dir: data_dir.to_path_buf(),
        });
    }
    let manifest: Manifest = read_json(from, MANIFEST)?;
    if manifest.format != FORMAT || manifest.version != FORMAT_VERSION {
        return Err(malformed(
            MANIFEST,
            format!(
                "format {:?} version {} is not {FORMAT:?} version {FORMAT_VERSION}",
                manifest.format, manifest.version
            ),
        ));
    }
    let coordinator = parse_key(
        MANIFEST,
        "coordinator_public_key",
        &manifest.coordinator_public_key,
    )?;
    let mut members = BTreeMap::new();
    for (state, key) in &manifest.members {
        members.insert(
            *state,
            parse_key(MANIFEST, &format!("{state}'s public key"), key)?,
        );
    }
    if let Some(expected) = options.coordinator_key
        && expected != coordinator
    {
        return Err(ImportError::KeyMismatch {
            what: "coordinator public key".into(),
        });
    }
    for (state, expected) in &options.members {
        if members.get(state).is_some_and(|k| k != expected) {
            return Err(ImportError::KeyMismatch {
                what: format!("public key of {state}"),
            });
        }
    }
    // With known keys, a state the configuration does not list would bring
    // its own key, unchecked: whoever wrote the export could sign for it.
    if !options.members.is_empty()
        && let Some(state) = members.keys().find(|s| !options.members.contains_key(s))
    {
        return Err(ImportError::UnknownMember { state: *state });
    }
    check_files(from, &manifest)?;

    // Headers, signatures, receipts and chains, before anything is stored.
    let mut entries = manifest.snapshots.clone();
    entries.sort_by_key(|e| (e.state, e.sequence));
    let snapshots = entries
        .iter()
        .map(|e| check_snapshot(from, e, &members, &coordinator))
        .collect::<Result<Vec<_>, _>>()?;
    check_chains(&snapshots)?;
    let records: Vec<EquivocationRecord> = read_json(from, EQUIVOCATIONS)?;
    let equivocations = check_equivocations(&records, &members, &snapshots)?;
    let reports: Vec<SeizureReport> = read_json(from, SEIZURE_REPORTS)?;
    let actions: Vec<OperatorAction> = read_json(from, OPERATOR_ACTIONS)?;
    for (i, a) in actions.iter().enumerate() {
        if !matches!(
            a.action,
            EventKind::Acknowledged | EventKind::Resolved | EventKind::Reopened
        ) || (a.action == EventKind::Resolved) != a.reason.is_some()
        {
            return Err(malformed(
                OPERATOR_ACTIONS,
                format!("entry {i}: {} is not an operator action", a.action.as_str()),
            ));
        }
    }
    let exported_trail: Vec<ExportedAuditRecord> = read_json(from, AUDIT_TRAIL)?;
    let trail = check_audit_trail(&exported_trail, &coordinator)?;
    let counts = Counts {
        snapshots: snapshots.len() as u64,
        items: snapshots
            .iter()
            .map(|s| s.record.signed.header.item_count)
            .sum(),
        equivocations: equivocations.len() as u64,
        seizure_reports: reports.len() as u64,
        operator_actions: actions.len() as u64,
        audit_records: trail.len() as u64,
    };
    if counts != manifest.counts {
        return Err(malformed(
            MANIFEST,
            format!(
                "counts {:?} do not match the files' {counts:?}",
                manifest.counts
            ),
        ));
    }

    let steps = timeline(&snapshots, &equivocations, &reports, &actions);
    let scratch = scratch_next_to(data_dir, ".tally-import-").map_err(import_io(data_dir))?;
    let engine = options
        .engine
        .clone()
        .unwrap_or_else(|| EngineConfig::from(&manifest.engine));
    let skipped = replay(
        from,
        scratch.path(),
        &steps,
        &manifest.canonical_rule,
        engine,
        &trail,
    )?;
    move_into_place(scratch, data_dir).map_err(import_io(data_dir))?;
    Ok(Summary {
        counts,
        skipped_actions: skipped,
    })
}

/// Orders everything by its original time. Snapshots of one state stay in
/// chain order even if the clock went back between them; on equal times
/// snapshots come first, then equivocations, seizure reports and actions
/// (an action always follows what opened its alert).
fn timeline<'a>(
    snapshots: &'a [CheckedSnapshot],
    equivocations: &'a [Equivocation],
    reports: &'a [SeizureReport],
    actions: &'a [OperatorAction],
) -> Vec<Step<'a>> {
    type Key = (i64, u8, Option<StateCode>, u64);
    let mut keyed: Vec<(Key, Step<'a>)> = Vec::new();
    let mut running: HashMap<StateCode, i64> = HashMap::new();
    for s in snapshots {
        let h = &s.record.signed.header;
        let at = running
            .entry(h.state)
            .and_modify(|t| *t = (*t).max(s.record.receipt.accepted_at_unix_ms))
            .or_insert(s.record.receipt.accepted_at_unix_ms);
        keyed.push(((*at, 0, Some(h.state), h.sequence), Step::Snapshot(s)));
    }
    for e in equivocations {
        let h = &e.signed.header;
        keyed.push((
            (e.recorded_at_unix_ms, 1, Some(h.state), h.sequence),
            Step::Equivocation(e),
        ));
    }
    for r in reports {
        keyed.push(((r.reported_at_unix_ms, 2, None, r.id), Step::Seizure(r)));
    }
    for a in actions {
        keyed.push(((a.at_unix_ms, 3, None, a.cursor), Step::Action(a)));
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, s)| s).collect()
}

/// Stores and reconciles the steps into a new store in `dir`; returns the
/// operator actions that could not be re-applied.
fn replay(
    from: &Path,
    dir: &Path,
    steps: &[Step<'_>],
    rule: &CanonicalRule,
    engine: EngineConfig,
    trail: &[SealedRecord],
) -> Result<Vec<String>, ImportError> {
    let storage = Storage::open_sled(dir)?;
    // The trail is history, not derived state: it goes back as it was.
    storage.audit.restore(trail)?;
    let store = storage.snapshots.as_ref();
    let alerts = Arc::new(AlertStore::with_storage(storage.alerts.clone())?);
    let start = match steps.first() {
        Some(Step::Snapshot(s)) => s.record.receipt.accepted_at_unix_ms,
        Some(Step::Equivocation(e)) => e.recorded_at_unix_ms,
        Some(Step::Seizure(r)) => r.reported_at_unix_ms,
        Some(Step::Action(a)) => a.at_unix_ms,
        None => 0,
    };
    let reconciler = Reconciler::open(
        storage.snapshots.clone(),
        alerts.clone(),
        storage.seizures.clone(),
        engine,
        start,
        None,
    )?;
    let mut skipped = Vec::new();
    for step in steps {
        match step {
            Step::Snapshot(s) => {
                store_snapshot(from, store, s, rule)?;
                reconciler.catch_up(s.record.receipt.accepted_at_unix_ms)?;
            }
            // As in the coordinator: recorded now, reconciled with the next
            // snapshot (or when the coordinator starts).
            Step::Equivocation(e) => store.record_equivocation(e)?,
            Step::Seizure(r) => {
                reconciler.replay_seizure_report(r.items.clone(), r.reported_at_unix_ms)?;
            }
            Step::Action(a) => {
                if let Err(reason) = apply_action(&reconciler, &alerts, a)? {
                    skipped.push(format!(
                        "{} of alert {} ({}) at {}: {reason}",
                        a.action.as_str(),
                        a.alert_id,
                        a.alert,
                        a.at_unix_ms
                    ));
                }
            }
        }
    }
    crate::coordinator::storage::drop_pinned((reconciler, alerts));
    storage.flush()?;
    crate::coordinator::storage::drop_pinned(storage);
    Ok(skipped)
}

/// Decodes the exported audit trail and checks it whole: sequence, hash
/// links and the coordinator's signature on every record.
fn check_audit_trail(
    exported: &[ExportedAuditRecord],
    coordinator: &VerifyingKey,
) -> Result<Vec<SealedRecord>, ImportError> {
    let field = |i: usize, name: &str, text: &str| {
        hex::decode(text)
            .map_err(|_| malformed(AUDIT_TRAIL, format!("entry {i}: {name} is not hex")))
    };
    let records = exported
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(SealedRecord {
                sequence: r.sequence,
                encoding: field(i, "encoding", &r.encoding)?,
                hash: field(i, "hash", &r.hash)?,
                signature: field(i, "signature", &r.signature)?,
            })
        })
        .collect::<Result<Vec<_>, ImportError>>()?;
    crate::audit::verify(&records, coordinator)
        .map_err(|broken| malformed(AUDIT_TRAIL, broken.to_string()))?;
    Ok(records)
}

/// Re-applies one operator action to the current alert of its condition.
/// `Ok(Err(reason))` if it does not apply (its condition did not hold).
fn apply_action(
    reconciler: &Reconciler,
    alerts: &AlertStore,
    a: &OperatorAction,
) -> Result<Result<(), String>, ImportError> {
    let mut target = alerts.current(&a.alert)?;
    if target.is_none() {
        // A clock-based alert the coordinator's timer had opened by then.
        reconciler.tick(a.at_unix_ms)?;
        target = alerts.current(&a.alert)?;
    }
    let Some(target) = target else {
        return Ok(Err("no alert for this condition is current".into()));
    };
    let result = match (a.action, a.reason) {
        (EventKind::Acknowledged, _) => alerts.acknowledge(target.id, &a.note, a.at_unix_ms),
        (EventKind::Resolved, Some(reason)) => {
            alerts.resolve(target.id, reason, &a.note, a.at_unix_ms)
        }
        (EventKind::Reopened, _) => alerts.reopen(target.id, &a.note, a.at_unix_ms),
        _ => return Ok(Err("not an operator action".into())),
    };
    match result {
        Ok(_) => Ok(Ok(())),
        Err(crate::coordinator::storage::alerts::ActionError::Store(e)) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Verifies a snapshot's items while storing them, then commits it with its
/// original receipt through the store's normal commit path.
fn store_snapshot(
    from: &Path,
    store: &dyn SnapshotStore,
    s: &CheckedSnapshot,
    rule: &CanonicalRule,
) -> Result<(), ImportError> {
    let header = &s.record.signed.header;
    let upload = store.begin_upload()?;
    let mut verifier = ItemStreamVerifier::new(header, rule.clone());
    let mut chunks = 0u32;
    let path = from.join(&s.items_path);
    stream_leaves(&path, |chunk| {
        verifier
            .push_chunk(chunk)
            .map_err(|e| file_err(&s.items_path, e.into()))?;
        store.put_chunk(upload, chunks, chunk)?;
        chunks += 1;
        Ok(())
    })
    .map_err(|e| file_err(&s.items_path, FileProblem::Unreadable(e)))??;
    verifier
        .finish()
        .map_err(|e| file_err(&s.items_path, e.into()))?;
    let mut record = s.record.clone();
    record.upload = upload;
    record.chunk_count = chunks;
    store.put_block_roots(&record.digest, &verifier.block_roots())?;
    store.commit(&record)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_point_is_told_from_a_plain_directory() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("store");
        std::fs::create_dir(&inside).unwrap();
        assert!(same_file_system(&inside, dir.path()).unwrap());
        assert!(scratch_next_to(&inside, ".tally-test-").is_ok());
        // procfs is its own file system on every Linux system.
        assert!(!same_file_system(Path::new("/proc"), dir.path()).unwrap());
    }
}
