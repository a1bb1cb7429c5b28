//! `tally node watch`: the drop folder, arrival order, retries while the
//! coordinator is down, rejected files, and a clean stop.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tally::node::Node;
use tally::node::watch::{Outcome, REJECTED_DIR, SUBMITTED_DIR, watch};
use tally::reconcile::EngineConfig;
use tally::snapshot::SnapshotDigest;
use tally::support::config::{Limits, NodeConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::common::*;

const HEADER: &str = "model,serial,status,site,counterparty\n";

/// An export with `n` distinct launchers, so a snapshot's item count tells
/// which file it came from.
fn export_with(n: usize, tag: &str) -> String {
    let mut text = HEADER.to_string();
    for i in 0..n {
        text.push_str(&format!("9P39,{tag}-{i},in_service,Depot 1,\n"));
    }
    text
}

/// Writes the node's keys and a config with fast retries and polling.
fn write_node_config(dir: &Path, st: &str, coordinator_url: &str) -> PathBuf {
    let keys = dir.join("keys");
    tally::support::keys::write_key_pair(&keys, st, &state_key(st)).unwrap();
    tally::support::keys::write_key_pair(&keys, "coordinator", &coordinator_key()).unwrap();
    let path = dir.join(format!("{st}.toml"));
    std::fs::write(
        &path,
        format!(
            "insecure = true\nstate = '{st}'\nkey_file = 'keys/{st}.key'\ncoordinator = '{coordinator_url}'\n\
             outbox_dir = 'outbox'\ncoordinator_public_key_file = 'keys/coordinator.pub'\n\
             [retry]\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\nmax_attempts = 0\n\
             [watch]\npoll_interval_ms = 20\n"
        ),
    )
    .unwrap();
    path
}

/// Drops `text` into `dir` as `name` the way writers must: written under a
/// temporary name, given its arrival time, then renamed.
fn drop_export(dir: &Path, name: &str, text: &str, arrival: SystemTime) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(arrival)
        .unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An address on which nothing listens (yet).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_while_the_coordinator_is_down_are_accepted_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = write_node_config(dir.path(), "KAZ", &format!("http://{addr}"));
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let drop_dir = drop_dir.clone();
        tokio::spawn(async move {
            watch(&node, &drop_dir, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };

    // Names sort the other way round from arrival, so only the modification
    // time can give the right order; one file is not an export at all.
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let at = |s| t0 + Duration::from_secs(s);
    drop_export(&drop_dir, "c-first.csv", &export_with(1, "C"), at(1));
    drop_export(&drop_dir, "bad.csv", "model,serial\n9K38,1\n", at(2));
    drop_export(&drop_dir, "b-second.csv", &export_with(2, "B"), at(3));
    drop_export(&drop_dir, "a-third.csv", &export_with(3, "A"), at(4));
    // Partly written files, by the convention: never touched.
    std::fs::write(drop_dir.join("d.csv.tmp"), "model,ser").unwrap();
    std::fs::write(drop_dir.join(".e.csv"), "model,ser").unwrap();

    // The coordinator is down: the watcher retries, nothing moves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(names_in(&drop_dir.join(SUBMITTED_DIR)).is_empty());
    assert!(!watcher.is_finished(), "the watcher keeps retrying");

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let coord = TestCoordinator::serve_on(
        assemble(
            &dir.path().join("coord"),
            &["KAZ"],
            Limits::default(),
            EngineConfig::default(),
        ),
        listener,
    )
    .await;
    let submitted = drop_dir.join(SUBMITTED_DIR);
    wait_for("three accepted exports", || names_in(&submitted).len() == 3).await;
    let _ = stop_tx.send(());
    let outcomes = watcher.await.unwrap().unwrap();

    let rejected = drop_dir.join(REJECTED_DIR);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Submitted {
                sequence: 1,
                moved_to: submitted.join("c-first.csv")
            },
            Outcome::Rejected {
                moved_to: rejected.join("bad.csv")
            },
            Outcome::Submitted {
                sequence: 2,
                moved_to: submitted.join("b-second.csv")
            },
            Outcome::Submitted {
                sequence: 3,
                moved_to: submitted.join("a-third.csv")
            },
        ]
    );
    // The coordinator holds the snapshots in arrival order: sequence k is
    // the file with k items.
    for sequence in 1..=3u64 {
        let stored = coord
            .store
            .get(state("KAZ"), sequence)
            .unwrap()
            .expect("stored snapshot");
        assert_eq!(
            stored.signed.header.item_count, sequence,
            "sequence {sequence}"
        );
    }
    assert_eq!(
        coord
            .store
            .latest(state("KAZ"))
            .unwrap()
            .unwrap()
            .signed
            .header
            .sequence,
        3
    );
    assert_eq!(names_in(&rejected), ["bad.csv", "bad.csv.reason.txt"]);
    let reason = std::fs::read_to_string(rejected.join("bad.csv.reason.txt")).unwrap();
    assert!(reason.contains("bad.csv"), "{reason}");
    assert_eq!(
        names_in(&drop_dir),
        [".e.csv", "d.csv.tmp", REJECTED_DIR, SUBMITTED_DIR]
    );
    coord.stop().await;
}

/// KGZ's upload takes a coordinator's only upload slot (`max_concurrent_uploads`
/// 1): header sent, stream kept open. Sending the snapshot's chunks, then
/// dropping the sender, completes it; the handle gives its answer. If the
/// coordinator did not take the slot for KGZ first, KGZ is the one shed and
/// the caller's check of that answer fails the test.
async fn hold_the_only_upload_slot(
    coord: &TestCoordinator,
) -> (
    TestSnapshot,
    mpsc::Sender<tally::proto::SubmitRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<tally::proto::Receipt>, tonic::Status>>,
) {
    let kgz = snapshot("KGZ", 1, SnapshotDigest::GENESIS, &many_items(10));
    let (tx, rx) = mpsc::channel(4);
    tx.send(header_msg(&kgz.signed)).await.unwrap();
    let mut kgz_client = coord.client().await;
    let held = tokio::spawn(async move { kgz_client.submit(ReceiverStream::new(rx)).await });
    coord.wait_for_uploads_in_flight(1).await;
    (kgz, tx, held)
}

/// The ministry's exporter renames today's export over yesterday's name
/// while yesterday's snapshot still waits for the coordinator (busy here:
/// its one upload slot is held). Yesterday's is delivered (it was signed);
/// today's must then be signed too, not filed under `submitted/` unsigned
/// because it has the name of a delivered file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_replaced_while_its_snapshot_waits_is_signed_next() {
    replaced_while_its_snapshot_waits(&export_with(2, "TUE"), [1, 2]).await;
}

/// The same, when the stock did not change: today's export has yesterday's
/// bytes, and is still today's report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_replaced_by_the_same_bytes_while_its_snapshot_waits_is_signed_next() {
    replaced_while_its_snapshot_waits(&export_with(1, "MON"), [1, 1]).await;
}

/// Monday's export (one item) is signed and waits; `tuesday` is renamed
/// over it a second later. `counts`: the item counts of sequences 1 and 2.
async fn replaced_while_its_snapshot_waits(tuesday: &str, counts: [u64; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start_with_limits(
        &dir.path().join("coord"),
        &["KAZ", "KGZ"],
        Limits {
            max_concurrent_uploads: 1,
            ..Limits::default()
        },
    )
    .await;
    let (kgz, tx, held) = hold_the_only_upload_slot(&coord).await;

    let cfg = write_node_config(dir.path(), "KAZ", &coord.url());
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    drop_export(&drop_dir, "daily.csv", &export_with(1, "MON"), t0);
    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    let submitted = drop_dir.join(SUBMITTED_DIR);
    let shed = ("submit snapshot".to_string(), "UNAVAILABLE".to_string());
    let outcomes = watch(&node, &drop_dir, async {
        for _ in 0..1500 {
            if crate::audit::trail(&coord).await.contains(&shed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            crate::audit::trail(&coord).await.contains(&shed),
            "Monday's upload was never shed"
        );
        drop_export(&drop_dir, "daily.csv", tuesday, t0 + Duration::from_secs(1));
        for c in &kgz.chunks {
            tx.send(chunk_msg(c)).await.unwrap();
        }
        drop(tx);
        wait_for("Tuesday's export accepted and filed", || {
            let newest = coord.store.latest(state("KAZ")).unwrap();
            newest.is_some_and(|s| s.signed.header.sequence == 2)
                && submitted.join("daily.csv").exists()
        })
        .await;
    })
    .await
    .unwrap();

    held.await
        .unwrap()
        .expect("KGZ held the slot and was accepted");
    assert_eq!(
        outcomes,
        vec![Outcome::Submitted {
            sequence: 2,
            moved_to: submitted.join("daily.csv")
        }]
    );
    let stored: Vec<(u64, i64)> = (1..=2)
        .map(|sequence| {
            let stored = coord.store.get(state("KAZ"), sequence).unwrap().unwrap();
            (
                stored.signed.header.item_count,
                stored.signed.header.as_of_unix_ms,
            )
        })
        .collect();
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    assert_eq!(
        stored,
        [
            (counts[0], ms(t0)),
            (counts[1], ms(t0 + Duration::from_secs(1)))
        ],
        "Monday's snapshot, then Tuesday's, each as of its file's time"
    );
    assert_eq!(
        std::fs::read_to_string(submitted.join("daily.csv")).unwrap(),
        tuesday
    );
    assert_eq!(names_in(&drop_dir), [SUBMITTED_DIR]);
    drop(node);
    coord.stop().await;
}

/// A copy of an export already filed, put back with its time kept (`cp -p`
/// of `submitted/daily.csv`, or a cron job that re-drops the ministry's
/// file with `rsync -t`), is the same export: filed, not signed again. The
/// next day's export with the same bytes is a new one: sequence 2, as of
/// its own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_filed_export_is_not_signed_again_but_the_next_days_identical_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["KAZ"]).await;
    let cfg = write_node_config(dir.path(), "KAZ", &coord.url());
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let drop_dir = drop_dir.clone();
        tokio::spawn(async move {
            watch(&node, &drop_dir, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let submitted = drop_dir.join(SUBMITTED_DIR);
    let monday = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let tuesday = monday + Duration::from_secs(86_400);
    let text = export_with(2, "D");

    drop_export(&drop_dir, "daily.csv", &text, monday);
    wait_for("Monday's export filed", || {
        submitted.join("daily.csv").exists()
    })
    .await;
    drop_export(&drop_dir, "daily-copy.csv", &text, monday);
    wait_for("the copy filed", || {
        submitted.join("daily-copy.csv").exists()
    })
    .await;
    drop_export(&drop_dir, "daily.csv", &text, tuesday);
    wait_for("Tuesday's export filed", || {
        submitted.join("daily-2.csv").exists()
    })
    .await;
    let _ = stop_tx.send(());
    let outcomes = watcher.await.unwrap().unwrap();

    assert_eq!(
        outcomes,
        vec![
            Outcome::Submitted {
                sequence: 1,
                moved_to: submitted.join("daily.csv")
            },
            Outcome::Submitted {
                sequence: 1,
                moved_to: submitted.join("daily-copy.csv")
            },
            Outcome::Submitted {
                sequence: 2,
                moved_to: submitted.join("daily-2.csv")
            },
        ]
    );
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let first = coord.store.get(state("KAZ"), 1).unwrap().unwrap();
    let second = coord.store.get(state("KAZ"), 2).unwrap().unwrap();
    assert_eq!(first.signed.header.as_of_unix_ms, ms(monday));
    assert_eq!(second.signed.header.as_of_unix_ms, ms(tuesday));
    assert_eq!(
        second.signed.header.items_root,
        first.signed.header.items_root
    );
    assert_eq!(second.signed.header.previous_digest, first.digest);
    assert_eq!(
        coord
            .store
            .latest(state("KAZ"))
            .unwrap()
            .unwrap()
            .signed
            .header
            .sequence,
        2
    );
    assert_eq!(names_in(&drop_dir), [SUBMITTED_DIR]);
    coord.stop().await;
}

/// A drop folder under `dir` holding `too-big.csv` (3 items), then
/// `fine.csv` (2 items).
fn too_big_then_fine(dir: &Path) -> PathBuf {
    let drop_dir = dir.join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let t0 = SystemTime::now() - Duration::from_secs(60);
    drop_export(&drop_dir, "too-big.csv", &export_with(3, "X"), t0);
    drop_export(
        &drop_dir,
        "fine.csv",
        &export_with(2, "Y"),
        t0 + Duration::from_secs(1),
    );
    drop_dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_coordinator_refuses_goes_to_rejected_and_the_next_file_takes_its_sequence()
{
    refused_export_is_rejected_and_the_next_file_takes_its_sequence(&[]).await;
}

/// A snapshot signed by an earlier run that stopped before the coordinator
/// answered, and then refused for its content, does not stop the watcher:
/// it leaves the outbox, its export goes to rejected/, and the next file
/// takes its sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_snapshot_refused_at_start_up_is_rejected_and_the_watcher_goes_on() {
    refused_export_is_rejected_and_the_next_file_takes_its_sequence(&["too-big.csv"]).await;
}

/// The same with both files signed by the earlier run: the second chains
/// on the refused first, so it leaves the outbox too (it could never be
/// accepted), and the watcher signs its file again as sequence 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_snapshot_chained_on_a_refused_one_is_signed_again() {
    refused_export_is_rejected_and_the_next_file_takes_its_sequence(&["too-big.csv", "fine.csv"])
        .await;
}

/// ARM's coordinator accepts at most 2 items; the drop folder holds
/// `too-big.csv` (3 items), then `fine.csv` (2). A previous run signed the
/// files in `signed_earlier` and stopped before sending them.
async fn refused_export_is_rejected_and_the_next_file_takes_its_sequence(signed_earlier: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start_with_limits(
        &dir.path().join("coord"),
        &["ARM"],
        Limits {
            max_items_per_snapshot: 2,
            ..Limits::default()
        },
    )
    .await;
    let cfg = write_node_config(dir.path(), "ARM", &coord.url());
    let drop_dir = too_big_then_fine(dir.path());

    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    for file in signed_earlier {
        node.prepare(&drop_dir.join(file), None, None).unwrap();
    }
    let submitted = drop_dir.join(SUBMITTED_DIR);
    let outcomes = watch(&node, &drop_dir, async {
        wait_for("the accepted export", || names_in(&submitted).len() == 1).await;
    })
    .await
    .unwrap();

    let rejected = drop_dir.join(REJECTED_DIR);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Rejected {
                moved_to: rejected.join("too-big.csv")
            },
            Outcome::Submitted {
                sequence: 1,
                moved_to: submitted.join("fine.csv")
            },
        ]
    );
    let reason = std::fs::read_to_string(rejected.join("too-big.csv.reason.txt")).unwrap();
    assert!(reason.contains("ResourceExhausted"), "{reason}");
    // The refused snapshot left the outbox; the accepted one is sequence 1.
    let entries = node.outbox().entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].sequence(), 1);
    assert_eq!(entries[0].signed.header.item_count, 2);
    assert!(entries[0].receipt.is_some());
    drop(node);
    coord.stop().await;
}

/// A reinstalled node whose outbox holds only a pending snapshot, refused
/// for its content once the coordinator (down at start-up) answers: the
/// outbox is empty again, so the next export continues the coordinator's
/// chain (sequence 2) instead of starting a conflicting sequence 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_pending_snapshot_the_next_export_continues_the_coordinators_chain() {
    let dir = tempfile::tempdir().unwrap();
    let coord_dir = dir.path().join("coord");
    let limits = Limits {
        max_items_per_snapshot: 2,
        ..Limits::default()
    };
    let first = snapshot("ARM", 1, SnapshotDigest::GENESIS, &many_items(2));
    let coord = TestCoordinator::start_with_limits(&coord_dir, &["ARM"], limits.clone()).await;
    submit(&mut coord.client().await, &first).await.unwrap();
    coord.stop().await;

    let addr = free_addr();
    let cfg = write_node_config(dir.path(), "ARM", &format!("http://{addr}"));
    let drop_dir = too_big_then_fine(dir.path());
    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    node.prepare(
        &drop_dir.join("too-big.csv"),
        None,
        Some((1, first.digest())),
    )
    .unwrap();

    let submitted = drop_dir.join(SUBMITTED_DIR);
    let outcomes = watch(&node, &drop_dir, async {
        // Down at start-up; then up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let coord = TestCoordinator::serve_on(
            assemble(&coord_dir, &["ARM"], limits, EngineConfig::default()),
            listener,
        )
        .await;
        wait_for("the accepted export", || names_in(&submitted).len() == 1).await;
        assert!(coord.store.equivocations().unwrap().is_empty());
        coord.stop().await;
    })
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Rejected {
                moved_to: drop_dir.join(REJECTED_DIR).join("too-big.csv")
            },
            Outcome::Submitted {
                sequence: 2,
                moved_to: submitted.join("fine.csv")
            },
        ]
    );
}

/// A busy coordinator sheds the node's upload with UNAVAILABLE: the node
/// keeps the export and its signed snapshot, retries, and delivers it once a
/// slot frees, instead of moving a valid export to `rejected/` (which it did
/// while shedding answered RESOURCE_EXHAUSTED, the code for a snapshot too big).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_shed_by_a_busy_coordinator_waits_and_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start_with_limits(
        &dir.path().join("coord"),
        &["ARM", "KGZ"],
        Limits {
            max_concurrent_uploads: 1,
            ..Limits::default()
        },
    )
    .await;
    let (kgz, tx, held) = hold_the_only_upload_slot(&coord).await;

    let cfg = write_node_config(dir.path(), "ARM", &coord.url());
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    drop_export(
        &drop_dir,
        "arm.csv",
        &export_with(2, "A"),
        SystemTime::now() - Duration::from_secs(60),
    );
    let node = Node::open(NodeConfig::load(&cfg).unwrap()).unwrap();
    let submitted = drop_dir.join(SUBMITTED_DIR);
    let shed = ("submit snapshot".to_string(), "UNAVAILABLE".to_string());
    let outcomes = watch(&node, &drop_dir, async {
        for _ in 0..1500 {
            if crate::audit::trail(&coord).await.contains(&shed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            crate::audit::trail(&coord).await.contains(&shed),
            "ARM's upload was never shed"
        );
        assert_eq!(names_in(&drop_dir), ["arm.csv"], "kept while shed");
        for c in &kgz.chunks {
            tx.send(chunk_msg(c)).await.unwrap();
        }
        drop(tx);
        wait_for("the accepted export", || names_in(&submitted).len() == 1).await;
    })
    .await
    .unwrap();

    held.await
        .unwrap()
        .expect("KGZ held the slot and was accepted");
    assert_eq!(
        outcomes,
        vec![Outcome::Submitted {
            sequence: 1,
            moved_to: submitted.join("arm.csv")
        }]
    );
    assert!(!drop_dir.join(REJECTED_DIR).exists());
    let entries = node.outbox().entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].receipt.is_some());
    drop(node);
    coord.stop().await;
}

/// The real binary: configured through a file plus an environment override,
/// it submits a dropped export and stops cleanly on SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_command_submits_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["TJK"]).await;
    // The file names a wrong address; TALLY_COORDINATOR overrides it.
    let cfg = write_node_config(dir.path(), "TJK", "http://127.0.0.1:9");
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    drop_export(
        &drop_dir,
        "tjk.csv",
        &export_with(2, "T"),
        SystemTime::now(),
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["node", "watch", "--config"])
        .arg(&cfg)
        .arg(&drop_dir)
        .env("TALLY_COORDINATOR", coord.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let submitted = drop_dir.join(SUBMITTED_DIR);
    wait_for("the accepted export", || {
        names_in(&submitted) == ["tjk.csv"]
    })
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..250 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("tally node watch did not stop within 5 s of SIGTERM");
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 exports accepted, 0 rejected"),
        "{stdout}"
    );
    assert_eq!(
        coord
            .store
            .latest(state("TJK"))
            .unwrap()
            .unwrap()
            .signed
            .header
            .item_count,
        2
    );
    coord.stop().await;
}
