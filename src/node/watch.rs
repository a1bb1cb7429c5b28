//! `tally node watch`: a drop folder that the node empties into the coordinator.
//!
//! # The drop-folder convention
//! - An export is ready when a regular file whose name ends in `.csv` (any
//!   case) and does not start with `.` appears in the folder. Writers write to
//!   another name (`NAME.csv.tmp`, `.NAME.csv`) and rename it to `NAME.csv`
//!   when it is complete: a rename within one file system is atomic, so the
//!   node never reads half a file. Other names are left alone.
//! - Arrival order is the file's modification time, then its name (byte
//!   order) for equal times. Each file becomes one snapshot, signed only once
//!   the previous file's snapshot was accepted, so sequence numbers follow
//!   arrival order. (A file copied in with its old time preserved, `cp -p`,
//!   arrives at that old time.) A snapshot's as-of time is its file's
//!   modification time, as with `tally node submit` without
//!   `--as-of-unix-ms`: when the export was written, however long it waited.
//! - Accepted: the file moves to `DIR/submitted/`. Refused for good (the
//!   export does not parse, or the coordinator refuses its content): the file
//!   moves to `DIR/rejected/` beside `NAME.reason.txt`, and the watcher goes
//!   on with the next file. A name already taken there gets `-2`, `-3`, …
//!   before its extension.
//! - A file is an export signed already, and is not signed again, if and
//!   only if the outbox holds a snapshot of the same bytes (SHA-256) as of
//!   the file's modification time or later, pending or accepted (see
//!   [`super`], "One export, one snapshot"): a file whose processing a crash
//!   or a stop interrupted, or a copy of an export put back with its time
//!   kept (`cp -p`, `rsync -t`), whatever its name. It is moved to
//!   `submitted/` once that snapshot is accepted. A file with the same bytes
//!   as the newest snapshot but a later modification time is a new export of
//!   an unchanged inventory: it is signed as the next sequence, as of its
//!   own time, so the state is not reported overdue.
//! - A file replaced (a new export renamed over its name, even with the
//!   same bytes) while its snapshot was being delivered is left where it is
//!   and signed at the next scan; only the export that was signed is filed
//!   under `submitted/` or `rejected/`.
//! - While the coordinator cannot be reached, the node retries with the
//!   backoff of `[retry]`, and later files wait: nothing is lost or reordered,
//!   and the outbox makes sure a restart resends the same signed snapshot.
//! - Problems with the node itself (key unknown to the coordinator, chain
//!   out of step, corrupt outbox) stop the watcher with an error: they need
//!   a person, and refusing every file would hide them. A snapshot refused
//!   for its signer (wrong key, wrong state, credentials) first leaves the
//!   outbox if the coordinator's chain ends before it, its file staying in
//!   the folder: a restart with the right key signs it again rather than
//!   resending what can never be accepted.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{ExportFile, Node, NodeError, OutboxEntry, Prepared};

/// Sub-folder of the drop folder for accepted exports.
pub const SUBMITTED_DIR: &str = "submitted";
/// Sub-folder of the drop folder for refused exports and their reasons.
pub const REJECTED_DIR: &str = "rejected";

/// Why the watcher stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("drop folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} (the watcher stops: this needs a person, not a retry)")]
    Node(#[from] NodeError),
}

fn folder_err(path: &Path) -> impl FnOnce(std::io::Error) -> WatchError + '_ {
    move |source| WatchError::Folder {
        path: path.to_path_buf(),
        source,
    }
}

/// Returns true if and only if `name` follows the convention for a complete export.
pub(crate) fn is_ready_export_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > 4 && name.to_ascii_lowercase().ends_with(".csv")
}

/// Orders candidate exports by arrival: modification time, then name.
pub(crate) fn arrival_order(files: &mut [(SystemTime, PathBuf)]) {
    files.sort_by(|(ta, a), (tb, b)| ta.cmp(tb).then_with(|| a.file_name().cmp(&b.file_name())));
}

/// The ready exports in `dir`, in arrival order.
pub(crate) fn ready_exports(dir: &Path) -> Result<Vec<PathBuf>, WatchError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_err(dir))? {
        let entry = entry.map_err(folder_err(dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_ready_export_name(name) {
            continue;
        }
        // A file removed between listing and here is simply not ready.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().map_err(folder_err(&path))?;
        files.push((modified, path));
    }
    arrival_order(&mut files);
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// A free name for `file_name` in `dir`: itself, else `stem-2.ext`, `stem-3.ext`, ….
fn free_name(dir: &Path, file_name: &str) -> PathBuf {
    let candidate = dir.join(file_name);
    if !candidate.exists() {
        return candidate;
    }
    let (stem, ext) = match file_name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (file_name, String::new()),
    };
    (2u32..)
        .map(|n| dir.join(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or(candidate)
}

fn move_into(file: &Path, dir: &Path) -> Result<PathBuf, WatchError> {
    std::fs::create_dir_all(dir).map_err(folder_err(dir))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export.csv");
    let target = free_name(dir, name);
    std::fs::rename(file, &target).map_err(folder_err(file))?;
    Ok(target)
}

/// Moves `file` to `rejected/` and writes the reason beside it.
fn reject(drop_dir: &Path, file: &Path, reason: &str) -> Result<PathBuf, WatchError> {
    let target = move_into(file, &drop_dir.join(REJECTED_DIR))?;
    let mut reason_path = target.clone().into_os_string();
    reason_path.push(".reason.txt");
    let reason_path = PathBuf::from(reason_path);
    std::fs::write(&reason_path, format!("{reason}\n")).map_err(folder_err(&reason_path))?;
    tracing::warn!(file = %file.display(), moved_to = %target.display(), %reason, "export rejected");
    Ok(target)
}

/// What happened to one export, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted as this sequence; the file is now at `moved_to`.
    Submitted { sequence: u64, moved_to: PathBuf },
    /// Refused; the file and its reason are in `rejected/`.
    Rejected { moved_to: PathBuf },
}

/// Watches `dir` until `shutdown` completes, submitting each ready export in
/// arrival order (see the module documentation). Returns what it did; an
/// error means a problem that needs a person.
pub async fn watch(
    node: &Node,
    dir: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<Vec<Outcome>, WatchError> {
    let mut outcomes = Vec::new();
    let poll = Duration::from_millis(node.config().watch.poll_interval_ms);
    tokio::pin!(shutdown);
    std::fs::metadata(dir).map_err(folder_err(dir))?;
    // The coordinator's chain head, asked before the first signing (waiting
    // for the coordinator if need be), and again whenever the outbox lost
    // entries. With an empty outbox a reinstalled node continues its state's
    // chain instead of signing a conflicting sequence 1; with an outbox that
    // ends before the head (restored from an older backup) nothing is signed.
    let mut head_known = false;
    let mut head = None;
    tracing::info!(dir = %dir.display(), poll_ms = poll.as_millis() as u64, "watching the drop folder");
    loop {
        // Snapshots signed earlier (by a previous run or `node submit`) go first.
        let sent = tokio::select! {
            r = node.submit_pending() => r,
            () = &mut shutdown => return Ok(outcomes),
        };
        match sent {
            Ok(_) => {}
            // Signed by an earlier run that stopped before the answer, and
            // refused for its content: remove it so that the sequence is free.
            // Its export, if still here, is signed again below and moved to
            // rejected/ with the coordinator's reason.
            Err(e) if e.is_refused_for_content() => {
                if node.discard_refused(&e)?.is_none() {
                    return Err(e.into());
                }
                head_known = false;
                continue;
            }
            // Signed with a key (or for a state, or with credentials) the
            // coordinator refuses: out of the outbox, so that a restart with
            // the right ones signs the exports, still here, again.
            Err(e) if e.is_refused_for_credentials() => {
                node.discard_refused_signer(&e).await?;
                return Err(e.into());
            }
            Err(e) if e.is_retryable() || matches!(e, NodeError::GaveUp { .. }) => {
                tracing::warn!(error = %e, "pending snapshots not delivered yet");
                tokio::select! {
                    () = tokio::time::sleep(poll) => continue,
                    () = &mut shutdown => return Ok(outcomes),
                }
            }
            Err(e) => return Err(e.into()),
        }
        for file in ready_exports(dir)? {
            if !head_known {
                let fetched = tokio::select! {
                    r = node.with_retry(|| node.fetch_chain_head()) => r,
                    () = &mut shutdown => return Ok(outcomes),
                };
                let outbox_empty = node.outbox().last().map_err(NodeError::from)?.is_none();
                match fetched {
                    Ok(h) => {
                        head = h;
                        head_known = true;
                    }
                    Err(e) if matches!(e, NodeError::GaveUp { .. }) => {
                        tracing::warn!(error = %e, "coordinator unreachable; will try again");
                        break;
                    }
                    // A head this node's key did not sign (e.g. after a key
                    // change): an outbox still says where the chain stands.
                    Err(e) if !outbox_empty => {
                        tracing::warn!(error = %e, "could not compare the outbox with the coordinator's chain");
                        head = None;
                        head_known = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let outcome = tokio::select! {
                r = submit_file(node, dir, &file, head) => r?,
                () = &mut shutdown => return Ok(outcomes),
            };
            match outcome {
                // Later files chain on the outbox's newest entry, not on `head`.
                Some(o) => outcomes.push(o),
                // Not delivered yet (the retry policy gave up for now): keep
                // the order, try again from this file after a pause.
                None => break,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut shutdown => return Ok(outcomes),
        }
    }
}

/// Signs and delivers one export. `Ok(None)`: not delivered yet (or the
/// file is gone), look again at the next scan.
async fn submit_file(
    node: &Node,
    dir: &Path,
    file: &Path,
    head: Option<(u64, crate::snapshot::SnapshotDigest)>,
) -> Result<Option<Outcome>, WatchError> {
    if !file.exists() {
        // Taken away since the scan: nothing to do, and nothing to move.
        return Ok(None);
    }
    let sequence = match node.prepare(file, None, head) {
        Ok(Prepared::Signed { sequence, items }) => {
            tracing::info!(file = %file.display(), sequence, items, "signed");
            sequence
        }
        Ok(Prepared::AlreadySigned { sequence }) => {
            tracing::info!(file = %file.display(), sequence, "this export was signed before (same bytes, as of its time or later); not signing it again");
            sequence
        }
        Err(e @ (NodeError::Export(_) | NodeError::Read { .. })) => {
            let moved_to = reject(dir, file, &e.to_string())?;
            return Ok(Some(Outcome::Rejected { moved_to }));
        }
        Err(e) => return Err(e.into()),
    };
    // What was signed; the file is compared with it before it is moved.
    let signed_export = node.outbox().entry(sequence).map_err(NodeError::from)?;
    match node.submit_pending().await {
        Ok(_) => {
            if !still_holds(file, signed_export.as_ref())? {
                return Ok(None);
            }
            let moved_to = move_into(file, &dir.join(SUBMITTED_DIR))?;
            tracing::info!(file = %file.display(), sequence, moved_to = %moved_to.display(), "accepted");
            Ok(Some(Outcome::Submitted { sequence, moved_to }))
        }
        Err(e) if e.is_refused_for_content() => match node.discard_refused(&e)? {
            Some(removed) if *removed.start() == sequence => {
                if !still_holds(file, signed_export.as_ref())? {
                    tracing::warn!(file = %file.display(), sequence, reason = %e, "the export signed from this file was refused");
                    return Ok(None);
                }
                let moved_to = reject(dir, file, &e.to_string())?;
                Ok(Some(Outcome::Rejected { moved_to }))
            }
            // An older pending snapshot was refused, and this file's went with
            // it: the watcher signs this file again on its next round.
            Some(_) => Ok(None),
            None => Err(e.into()),
        },
        Err(e) if e.is_refused_for_credentials() => {
            node.discard_refused_signer(&e).await?;
            Err(e.into())
        }
        Err(e) if e.is_retryable() || matches!(e, NodeError::GaveUp { .. }) => {
            tracing::warn!(error = %e, file = %file.display(), "not delivered yet; will try again");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `file` still holds an export that the snapshot `signed` covers
/// ([`OutboxEntry::covers`]: the bytes it was signed from, modified no later
/// than its as-of time). Writers replace a file by renaming a new one over
/// its name, and delivery can take hours while the coordinator is away: a
/// newer export in its place, even one with the same bytes, must stay for the
/// next scan, to be signed, rather than be filed with the verdict on the
/// older one. A file taken away meanwhile holds nothing either.
fn still_holds(file: &Path, signed: Option<&OutboxEntry>) -> Result<bool, WatchError> {
    let now = match ExportFile::read(file) {
        Ok(export) => export,
        Err(NodeError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %file.display(), "taken away before it could be filed");
            return Ok(false);
        }
        Err(NodeError::Read { source, .. }) => return Err(folder_err(file)(source)),
        Err(e) => return Err(e.into()),
    };
    let same = signed.is_some_and(|e| e.covers(&now.sha256, now.modified_unix_ms));
    if !same {
        tracing::info!(file = %file.display(), "replaced by a newer export since it was signed; the new one is signed next");
    }
    Ok(same)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_csv_names_are_ready() {
        for (name, ready) in [
            ("rus-2026-11-27.csv", true),
            ("EXPORT.CSV", true),
            ("rus.csv.tmp", false),
            (".rus.csv", false),
            ("rus.csv.part", false),
            (".csv", false),
            ("notes.txt", false),
        ] {
            assert_eq!(is_ready_export_name(name), ready, "{name}");
        }
    }

    #[test]
    fn arrival_is_modification_time_then_name() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut files = vec![
            (t(20), PathBuf::from("a.csv")),
            (t(10), PathBuf::from("z.csv")),
            (t(20), PathBuf::from("0.csv")),
        ];
        arrival_order(&mut files);
        let names: Vec<_> = files.iter().map(|(_, p)| p.to_str().unwrap()).collect();
        assert_eq!(names, ["z.csv", "0.csv", "a.csv"]);
    }

    #[test]
    fn a_taken_name_gets_a_number_before_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_name(dir.path(), "x.csv"), dir.path().join("x.csv"));
        std::fs::write(dir.path().join("x.csv"), "").unwrap();
        std::fs::write(dir.path().join("x-2.csv"), "").unwrap();
        assert_eq!(free_name(dir.path(), "x.csv"), dir.path().join("x-3.csv"));
    }
}
