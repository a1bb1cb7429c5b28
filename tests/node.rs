//! The member node: export → signed snapshot in the outbox → coordinator.

use std::path::{Path, PathBuf};
use std::process::Command;

use tally::node::{Node, NodeError, Prepared};
use tally::snapshot::SnapshotDigest;
use tally::support::config::NodeConfig;

use crate::common::*;

const EXPORT_1: &str = "model,serial,status,site,counterparty\n\
9K38,ка-0 12,in_service,Depot 4,\n\
9M39,M-100,in_storage,Depot 4,\n\
9P39,P-7,transferred_out,,KAZ\n";

const EXPORT_2: &str = "model,serial,status,site,counterparty\n\
9K38,KA012,in_service,Depot 4,\n\
9M39,M-100,expended,Range 2,\n";

/// Writes the node's key (the deterministic test key for `st`, so the test
/// coordinator knows it) and a node config pointing at `coordinator_url`.
fn node_config(dir: &Path, st: &str, coordinator_url: &str, outbox: &str) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.join(format!("{st}.key")).exists() {
        tally::support::keys::write_key_pair(&keys, st, &state_key(st)).unwrap();
    }
    if !keys.join("coordinator.pub").exists() {
        tally::support::keys::write_key_pair(&keys, "coordinator", &coordinator_key()).unwrap();
    }
    let path = dir.join(format!("{st}-{outbox}.toml"));
    std::fs::write(
        &path,
        format!(
            "insecure = true\nstate = '{st}'\nkey_file = 'keys/{st}.key'\ncoordinator = '{coordinator_url}'\n\
             outbox_dir = '{outbox}'\ncoordinator_public_key_file = 'keys/coordinator.pub'\n\
             [retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\nmax_attempts = 100\n"
        ),
    )
    .unwrap();
    path
}

/// Opens a node, waiting briefly if a node dropped a moment ago still holds
/// the outbox lock (sled releases it when its background flusher stops).
fn open_node(cfg: &Path) -> Node {
    for _ in 0..100 {
        match Node::open(NodeConfig::load(cfg).unwrap()) {
            Ok(node) => return node,
            Err(e) if e.to_string().contains("is in use by another tally process") => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("outbox still locked after 2 s");
}

fn write_export(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_signs_into_its_outbox_then_submits_and_the_receipt_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["RUS"]).await;
    let cfg = node_config(dir.path(), "RUS", &coord.url(), "outbox");
    let node = open_node(&cfg);
    let export = write_export(dir.path(), "rus-1.csv", EXPORT_1);

    assert_eq!(
        node.prepare(&export, Some(1_790_000_000_000), None)
            .unwrap(),
        Prepared::Signed {
            sequence: 1,
            items: 3
        }
    );
    let pending = node.outbox().pending().unwrap();
    assert_eq!(pending.len(), 1, "stored before anything is sent");

    let receipts = node.submit_pending().await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].digest, pending[0].digest());
    assert!(node.outbox().pending().unwrap().is_empty());

    let (signed, _) = fetch_and_verify(&mut coord.client().await, "RUS", 1).await;
    assert_eq!(signed.header.item_count, 3);
    assert_eq!(signed.header.as_of_unix_ms, 1_790_000_000_000);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_after_signing_resubmits_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let cfg = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    let export = write_export(dir.path(), "arm-1.csv", EXPORT_1);
    let signed_digest = {
        let node = open_node(&cfg);
        node.prepare(&export, None, None).unwrap();
        node.outbox().last().unwrap().unwrap().digest()
        // the node "dies" here: dropped before sending anything
    };
    let node = open_node(&cfg);
    // Running the same export again signs nothing new...
    assert_eq!(
        node.prepare(&export, None, None).unwrap(),
        Prepared::AlreadySigned { sequence: 1 }
    );
    // ...and what goes out is the snapshot signed before the crash.
    let receipts = node.submit_pending().await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].digest, signed_digest);
    // A new export becomes sequence 2, chained to the first.
    let export2 = write_export(dir.path(), "arm-2.csv", EXPORT_2);
    assert_eq!(
        node.prepare(&export2, None, None).unwrap(),
        Prepared::Signed {
            sequence: 2,
            items: 2
        }
    );
    let r2 = node.submit_pending().await.unwrap();
    assert_eq!(r2[0].sequence, 2);
    let (signed2, _) = fetch_and_verify(&mut coord.client().await, "ARM", 2).await;
    assert_eq!(signed2.header.previous_digest, signed_digest);
    coord.stop().await;
}

/// `text` written to `dir/name`, modified at `unix_ms` (when the ministry's
/// exporter wrote it, as far as the node can tell).
fn write_export_at(dir: &Path, name: &str, text: &str, unix_ms: i64) -> PathBuf {
    let path = write_export(dir, name, text);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms as u64);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(at)
        .unwrap();
    path
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const HOUR_MS: i64 = 60 * 60 * 1000;
const MINUTE_MS: i64 = 60 * 1000;

/// The same export file submitted again signs nothing, whether its
/// snapshot is pending or accepted, newest or not; an inventory that went
/// back to what it was comes in a new export (a later modification time)
/// and is signed again: the coordinator must hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_that_goes_back_to_an_earlier_export_is_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let cfg = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    let t0 = 1_790_000_000_000;
    let first = write_export_at(dir.path(), "arm-1.csv", EXPORT_1, t0);
    let second = write_export_at(dir.path(), "arm-2.csv", EXPORT_2, t0 + DAY_MS);
    let back = write_export_at(dir.path(), "arm-3.csv", EXPORT_1, t0 + 2 * DAY_MS);
    let node = open_node(&cfg);
    let mut outcomes = Vec::new();
    for export in [&first, &second, &second, &first, &back, &back] {
        outcomes.push(node.prepare(export, None, None).unwrap());
        node.submit_pending().await.unwrap();
    }
    assert_eq!(
        outcomes,
        [
            Prepared::Signed {
                sequence: 1,
                items: 3
            },
            Prepared::Signed {
                sequence: 2,
                items: 2
            },
            Prepared::AlreadySigned { sequence: 2 },
            // The first day's file again, after the second day's: stale.
            Prepared::AlreadySigned { sequence: 1 },
            Prepared::Signed {
                sequence: 3,
                items: 3
            },
            Prepared::AlreadySigned { sequence: 3 },
        ]
    );
    let (newest, _) = fetch_and_verify(&mut coord.client().await, "ARM", 3).await;
    assert_eq!(newest.header.item_count, 3);
    assert_eq!(newest.header.as_of_unix_ms, t0 + 2 * DAY_MS);
    coord.stop().await;
}

/// `--as-of-unix-ms` is part of what makes an export: the same bytes as of
/// the same time are a retry, as of a later time a new snapshot of an
/// unchanged inventory, as of an earlier time than one already signed a
/// stale export. Without it the file's modification time decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_as_of_a_later_time_are_a_new_export_and_as_of_the_same_time_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let cfg = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    let t0 = 1_790_000_000_000;
    let export = write_export_at(dir.path(), "arm.csv", EXPORT_1, t0 - HOUR_MS);
    let node = open_node(&cfg);
    let signed = |sequence| Prepared::Signed { sequence, items: 3 };
    let already = |sequence| Prepared::AlreadySigned { sequence };
    for (as_of, expected, why) in [
        (Some(t0), signed(1), "the first export"),
        (Some(t0), already(1), "the same export retried"),
        (
            Some(t0 + DAY_MS),
            signed(2),
            "the next day, nothing changed",
        ),
        (Some(t0 + DAY_MS), already(2), "retried"),
        (Some(t0), already(2), "stale: as of before sequence 2"),
        (None, already(2), "as of its modification time: stale"),
        (Some(t0 + DAY_MS + 1), signed(3), "later"),
    ] {
        assert_eq!(
            node.prepare(&export, as_of, None).unwrap(),
            expected,
            "{why}"
        );
        node.submit_pending().await.unwrap();
    }
    // The file written again (the exporter ran once more, same stock).
    let again = write_export_at(dir.path(), "arm.csv", EXPORT_1, t0 + 2 * DAY_MS);
    assert_eq!(node.prepare(&again, None, None).unwrap(), signed(4));
    assert_eq!(node.prepare(&again, None, None).unwrap(), already(4));
    node.submit_pending().await.unwrap();
    let as_of: Vec<i64> = (1..=4)
        .map(|sequence| {
            let stored = coord.store.get(state("ARM"), sequence).unwrap().unwrap();
            stored.signed.header.as_of_unix_ms
        })
        .collect();
    assert_eq!(as_of, [t0, t0 + DAY_MS, t0 + DAY_MS + 1, t0 + 2 * DAY_MS]);
    assert!(coord.store.equivocations().unwrap().is_empty());
    coord.stop().await;
}

/// The alert events recorded after `cursor`, as (action, kind) pairs.
fn events_after(coord: &TestCoordinator, cursor: u64) -> Vec<(String, String)> {
    let alerts = coord.reconciler.as_ref().expect("running").alerts();
    alerts
        .events_after(cursor, 1000)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind.as_str().to_string(), e.key.kind.to_string()))
        .collect()
}

/// Runs the coordinator's clock-based rules at `now`, as its ticker would.
async fn tick(coord: &TestCoordinator, now: i64) {
    let reconciler = coord.reconciler.clone().expect("running");
    tokio::task::spawn_blocking(move || reconciler.tick(now))
        .await
        .unwrap()
        .unwrap();
}

/// A ministry whose stock did not change reports on time all the same: the
/// second day's export, byte for byte the first day's, is sequence 2 as of
/// its own time, changes no alert and keeps RUS from being overdue; the
/// same file retried is not signed twice. A third day's, late, clears the
/// `snapshot_overdue` that opened meanwhile and changes nothing else (the
/// open `transfer_not_received` of an item in it stays as it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_inventory_exported_again_is_the_next_snapshot_and_is_not_overdue() {
    use tally::reconcile::EngineConfig;
    use tally::support::clock::Clock;

    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_790_000_000_000;
    let (clock, time) = Clock::manual(t0 + MINUTE_MS);
    let engine = EngineConfig {
        transfer_grace_ms: HOUR_MS,
        cadence_ms: [(state("RUS"), DAY_MS)].into_iter().collect(),
    };
    // The ticker runs once at start-up; the test runs the clock's rules
    // itself, at the times it chooses.
    let coord = TestCoordinator::serve(assemble_with_clock(
        &dir.path().join("coord"),
        &["RUS", "KAZ"],
        Default::default(),
        engine,
        std::time::Duration::from_secs(3600),
        clock,
    ))
    .await;
    let cfg = node_config(dir.path(), "RUS", &coord.url(), "outbox");
    let node = open_node(&cfg);

    // Day 1: EXPORT_1 declares P-7 transferred to KAZ, which never
    // reports it: `transfer_not_received` once the grace period is over.
    let day1 = write_export_at(dir.path(), "rus-day1.csv", EXPORT_1, t0);
    node.prepare(&day1, None, None).unwrap();
    node.submit_pending().await.unwrap();
    time.set(t0 + 2 * HOUR_MS);
    tick(&coord, t0 + 2 * HOUR_MS).await;
    let opened = [("opened".to_string(), "transfer_not_received".to_string())];
    assert_eq!(events_after(&coord, 0), opened);
    let cursor = coord.reconciler.as_ref().unwrap().alerts().last_cursor();

    // Day 2, on time, nothing changed.
    let day2_at = t0 + DAY_MS - 10 * MINUTE_MS;
    let day2 = write_export_at(dir.path(), "rus-day2.csv", EXPORT_1, day2_at);
    time.set(day2_at + 5 * MINUTE_MS);
    assert_eq!(
        node.prepare(&day2, None, None).unwrap(),
        Prepared::Signed {
            sequence: 2,
            items: 3
        }
    );
    assert_eq!(node.submit_pending().await.unwrap().len(), 1);
    // Retried (a cron job running twice): nothing new signed or sent.
    assert_eq!(
        node.prepare(&day2, None, None).unwrap(),
        Prepared::AlreadySigned { sequence: 2 }
    );
    assert!(node.submit_pending().await.unwrap().is_empty());
    let first = coord.store.get(state("RUS"), 1).unwrap().unwrap();
    let second = coord.store.get(state("RUS"), 2).unwrap().unwrap();
    assert_eq!(second.signed.header.as_of_unix_ms, day2_at);
    assert_eq!(second.signed.header.previous_digest, first.digest);
    assert_eq!(
        second.signed.header.items_root,
        first.signed.header.items_root
    );
    // Past day 1's cadence, within day 2's: not overdue, nothing changed.
    time.set(t0 + DAY_MS + HOUR_MS);
    tick(&coord, t0 + DAY_MS + HOUR_MS).await;
    assert_eq!(events_after(&coord, cursor), []);

    // Day 3's export is late: RUS is overdue until it arrives, and its
    // arrival clears that and only that.
    let late = day2_at + DAY_MS + 2 * HOUR_MS;
    time.set(late);
    tick(&coord, late).await;
    let overdue = || ("opened".to_string(), "snapshot_overdue".to_string());
    assert_eq!(events_after(&coord, cursor), [overdue()]);
    let day3 = write_export_at(dir.path(), "rus-day3.csv", EXPORT_1, late);
    time.set(late + MINUTE_MS);
    assert_eq!(
        node.prepare(&day3, None, None).unwrap(),
        Prepared::Signed {
            sequence: 3,
            items: 3
        }
    );
    node.submit_pending().await.unwrap();
    assert_eq!(
        node.prepare(&day3, None, None).unwrap(),
        Prepared::AlreadySigned { sequence: 3 }
    );
    assert_eq!(
        events_after(&coord, cursor),
        [
            overdue(),
            ("cleared".to_string(), "snapshot_overdue".to_string())
        ]
    );
    let current: Vec<String> = coord
        .reconciler
        .as_ref()
        .unwrap()
        .alerts()
        .current_alerts()
        .unwrap()
        .iter()
        .map(|a| a.key.kind.to_string())
        .collect();
    assert_eq!(current, ["transfer_not_received"]);
    assert_eq!(
        coord
            .store
            .latest(state("RUS"))
            .unwrap()
            .unwrap()
            .signed
            .header
            .sequence,
        3
    );
    assert!(coord.store.equivocations().unwrap().is_empty());
    drop(node);
    coord.stop().await;
}

/// A chunk the node's own outbox cannot give back ends the upload short;
/// the coordinator refuses that, but the fault is the outbox's, not the
/// export's: the snapshot stays pending instead of being discarded as
/// refused for its content (which would send its export to rejected/).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_outbox_chunk_is_an_outbox_error_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let cfg = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    let export = write_export(dir.path(), "arm-1.csv", EXPORT_1);
    open_node(&cfg).prepare(&export, None, None).unwrap();
    {
        // The node just dropped may hold the lock a moment longer.
        let db = (0..100)
            .find_map(|_| {
                let opened = sled::open(dir.path().join("outbox")).ok();
                if opened.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened
            })
            .expect("outbox opens");
        let chunks = db.open_tree("chunks").unwrap();
        let mut first_chunk = 1u64.to_be_bytes().to_vec();
        first_chunk.extend_from_slice(&0u32.to_be_bytes());
        assert!(chunks.remove(first_chunk).unwrap().is_some());
        tally::coordinator::storage::flush(&chunks).unwrap();
    }
    let node = open_node(&cfg);
    let error = node.submit_pending().await.unwrap_err();
    assert!(
        matches!(
            error,
            NodeError::Outbox(tally::node::OutboxError::MissingChunk {
                sequence: 1,
                index: 0
            })
        ),
        "{error:?}"
    );
    assert_eq!(node.discard_refused(&error).unwrap(), None);
    assert_eq!(node.outbox().pending().unwrap().len(), 1);
    assert!(coord.store.latest(state("ARM")).unwrap().is_none());
    coord.stop().await;
}

/// A node configured with the wrong key signs a snapshot the coordinator
/// refuses (UNAUTHENTICATED). Kept pending, it would be resent first, and
/// refused, by every run after the key is fixed: it leaves the outbox, and
/// the same export signed with the right key is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_signed_with_the_wrong_key_does_not_block_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let cfg = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    tally::support::keys::write_key_pair(&dir.path().join("keys"), "KAZ", &state_key("KAZ"))
        .unwrap();
    let right = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, right.replace("keys/ARM.key", "keys/KAZ.key")).unwrap();
    let export = write_export(dir.path(), "arm-1.csv", EXPORT_1);
    {
        let node = open_node(&cfg);
        node.prepare(&export, None, None).unwrap();
        let error = node.submit_pending().await.unwrap_err();
        assert!(error.is_refused_for_credentials(), "{error:?}");
        assert_eq!(
            node.discard_refused(&error).unwrap(),
            None,
            "not for content"
        );
        assert_eq!(
            node.discard_refused_signer(&error).await.unwrap(),
            Some(1..=1)
        );
        assert!(node.outbox().entries().unwrap().is_empty());
    }
    std::fs::write(&cfg, right).unwrap();
    let node = open_node(&cfg);
    assert_eq!(
        node.prepare(&export, None, None).unwrap(),
        Prepared::Signed {
            sequence: 1,
            items: 3
        }
    );
    let receipts = node.submit_pending().await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].sequence, 1);
    coord.stop().await;
}

/// The same refusal for a sequence the coordinator already holds (a
/// snapshot whose receipt was lost, say) keeps the snapshot: signing that
/// sequence again with another key would be an equivocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_signed_snapshot_is_kept_if_its_sequence_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["ARM"]).await;
    let right = node_config(dir.path(), "ARM", &coord.url(), "outbox-right");
    {
        let node = open_node(&right);
        let export = write_export(dir.path(), "arm-2.csv", EXPORT_2);
        node.prepare(&export, None, None).unwrap();
        node.submit_pending().await.unwrap();
    }
    let wrong = node_config(dir.path(), "ARM", &coord.url(), "outbox");
    tally::support::keys::write_key_pair(&dir.path().join("keys"), "KAZ", &state_key("KAZ"))
        .unwrap();
    let text = std::fs::read_to_string(&wrong).unwrap();
    std::fs::write(&wrong, text.replace("keys/ARM.key", "keys/KAZ.key")).unwrap();
    let node = open_node(&wrong);
    let export = write_export(dir.path(), "arm-1.csv", EXPORT_1);
    node.prepare(&export, None, None).unwrap();
    let error = node.submit_pending().await.unwrap_err();
    assert!(error.is_refused_for_credentials(), "{error:?}");
    assert_eq!(node.discard_refused_signer(&error).await.unwrap(), None);
    assert_eq!(node.outbox().pending().unwrap().len(), 1);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_retries_until_the_coordinator_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, then free it: nothing listens there yet.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let cfg = node_config(dir.path(), "KGZ", &format!("http://{addr}"), "outbox");
    let node = open_node(&cfg);
    node.prepare(&write_export(dir.path(), "k.csv", EXPORT_1), None, None)
        .unwrap();
    let sending = tokio::spawn(async move { node.submit_pending().await });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        !sending.is_finished(),
        "still retrying while nothing listens"
    );

    let coordinator = assemble(
        &dir.path().join("coord"),
        &["KGZ"],
        Default::default(),
        Default::default(),
    );
    let store = coordinator.ingestor.store().clone();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = tokio::spawn(tally::coordinator::server::serve(
        coordinator,
        listener,
        std::future::pending(),
    ));
    let receipts = tokio::time::timeout(std::time::Duration::from_secs(20), sending)
        .await
        .expect("accepted within 20 s")
        .unwrap()
        .unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        store.latest(state("KGZ")).unwrap().unwrap().digest,
        receipts[0].digest
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_bad_rows_signs_nothing_and_lists_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = node_config(dir.path(), "TJK", "http://127.0.0.1:1", "outbox");
    let node = open_node(&cfg);
    let export = write_export(
        dir.path(),
        "bad.csv",
        "model,serial,status,site,counterparty\n9K38,A1,in_service,,\n9K38,A2,in-servise,,\n9K38,,in_service,,\n9K38,A4,transferred_out,,\n",
    );
    let err = node.prepare(&export, None, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NodeError::Export(_)), "{msg}");
    for needle in ["bad.csv:3", "bad.csv:4", "bad.csv:5", "in-servise"] {
        assert!(msg.contains(needle), "{needle:?} missing from:\n{msg}");
    }
    assert!(node.outbox().last().unwrap().is_none(), "nothing signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_node_continues_the_coordinators_chain() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["BLR"]).await;
    let first = {
        let cfg = node_config(dir.path(), "BLR", &coord.url(), "outbox-old");
        let node = open_node(&cfg);
        node.prepare(&write_export(dir.path(), "b1.csv", EXPORT_1), None, None)
            .unwrap();
        node.submit_pending().await.unwrap().remove(0)
    };
    // A fresh outbox, same key: it learns the head instead of signing a
    // conflicting sequence 1.
    let cfg = node_config(dir.path(), "BLR", &coord.url(), "outbox-new");
    let node = open_node(&cfg);
    let head = node.fetch_chain_head().await.unwrap();
    assert_eq!(head, Some((1, first.digest)));
    assert_eq!(
        node.prepare(&write_export(dir.path(), "b2.csv", EXPORT_2), None, head)
            .unwrap(),
        Prepared::Signed {
            sequence: 2,
            items: 2
        }
    );
    node.submit_pending().await.unwrap();
    assert!(coord.store.equivocations().unwrap().is_empty());
    assert_ne!(first.digest, SnapshotDigest::GENESIS);
    coord.stop().await;
}

fn tally_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Runs `tally node submit --config CFG EXPORT` off the async threads.
async fn cli_node_submit(cfg: &Path, export: PathBuf) -> std::process::Output {
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || {
        tally_cmd()
            .args(["node", "submit", "--config"])
            .arg(&cfg)
            .arg(&export)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_node_submit_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = tally_cmd()
        .args(["keygen", "--state", "KAZ", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("KAZ.key"));
    // Refuses to overwrite an existing key.
    let again = tally_cmd()
        .args(["keygen", "--state", "KAZ", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let key = tally::support::keys::read_signing_key(&keys.join("KAZ.key")).unwrap();
    let coordinator = tally::coordinator::server::assemble(
        tally::coordinator::storage::Storage::open_sled(&dir.path().join("coord")).unwrap(),
        [(state("KAZ"), key.verifying_key())],
        coordinator_key(),
        Default::default(),
        Default::default(),
        Default::default(),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let store = coordinator.ingestor.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tally::coordinator::server::serve(
        coordinator,
        listener,
        std::future::pending(),
    ));

    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!("insecure = true\nstate = 'KAZ'\nkey_file = 'keys/KAZ.key'\ncoordinator = 'http://{addr}'\noutbox_dir = 'outbox'\n"),
    )
    .unwrap();
    let export = write_export_at(dir.path(), "kaz.csv", EXPORT_1, 1_790_000_000_000);
    let submit = cli_node_submit(&cfg, export.clone()).await;
    let stdout = String::from_utf8_lossy(&submit.stdout);
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    assert!(
        stdout.contains("signed")
            && stdout.contains("as sequence 1 (3 items) as of 1790000000000 (unix ms)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("accepted: state KAZ sequence 1 digest"),
        "{stdout}"
    );
    // The same file again (a retry, a cron job): nothing signed or sent.
    let again = cli_node_submit(&cfg, export).await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("was already signed as sequence 1 (as of 1790000000000 unix ms)")
            && !stdout.contains("accepted:"),
        "{stdout}"
    );

    let status = tally_cmd()
        .args(["node", "status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("last accepted: sequence 1"), "{stdout}");
    assert!(stdout.contains("pending: none"), "{stdout}");
    assert_eq!(
        store
            .latest(state("KAZ"))
            .unwrap()
            .unwrap()
            .signed
            .header
            .item_count,
        3
    );
    server.abort();
}

/// A node with an empty outbox signs only once it knows where its state's
/// chain stands: with the coordinator unreachable it refuses unless told
/// `--new-chain`, and `--new-chain` is refused when the coordinator holds a
/// chain for the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_node_submit_with_an_empty_outbox_needs_the_chain_head_or_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<std::ffi::OsString>| {
        tokio::task::spawn_blocking(move || tally_cmd().args(args).output().unwrap())
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let export = write_export(dir.path(), "kaz.csv", EXPORT_1);

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let cfg = node_config(
        dir.path(),
        "KAZ",
        &format!("http://127.0.0.1:{port}"),
        "offline",
    );
    let quick = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_attempts = 100", "max_attempts = 2");
    std::fs::write(&cfg, quick).unwrap();
    let submit = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "submit".into(),
            "--config".into(),
            cfg.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args.push(export.clone().into());
        run(args)
    };
    let status = || {
        run(vec![
            "node".into(),
            "status".into(),
            "--config".into(),
            cfg.clone().into(),
        ])
    };

    let refused = submit(&[]).await.unwrap();
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains("nothing was signed") && err.contains("--new-chain"),
        "{err}"
    );
    let st = text(&status().await.unwrap().stdout);
    assert!(
        st.contains("last accepted: none") && st.contains("pending: none"),
        "{st}"
    );

    // Told that KAZ has never submitted: signs sequence 1 and keeps it.
    let signed = submit(&["--new-chain"]).await.unwrap();
    assert!(
        text(&signed.stdout).contains("as sequence 1"),
        "{}",
        text(&signed.stdout)
    );
    assert!(
        !signed.status.success(),
        "the coordinator is still unreachable"
    );
    let st = text(&status().await.unwrap().stdout);
    assert!(st.contains("pending: sequence 1"), "{st}");

    // A coordinator that holds KAZ's chain: --new-chain is refused, and
    // without it a fresh outbox continues the chain.
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["KAZ"]).await;
    let first = snapshot("KAZ", 1, SnapshotDigest::GENESIS, &many_items(3));
    crate::common::submit(&mut coord.client().await, &first)
        .await
        .expect("accepted");
    let cfg2 = node_config(dir.path(), "KAZ", &coord.url(), "fresh");
    let submit2 = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "submit".into(),
            "--config".into(),
            cfg2.clone().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args.push(export.clone().into());
        run(args)
    };
    let forked = submit2(&["--new-chain"]).await.unwrap();
    assert!(!forked.status.success());
    let err = text(&forked.stderr);
    assert!(
        err.contains("already holds KAZ's chain up to sequence 1"),
        "{err}"
    );
    let continued = submit2(&[]).await.unwrap();
    assert!(continued.status.success(), "{}", text(&continued.stderr));
    assert!(text(&continued.stdout).contains("accepted: state KAZ sequence 2"));
    assert!(coord.store.equivocations().unwrap().is_empty());
    coord.stop().await;
}

/// A coordinator for KAZ that accepts at most two items per snapshot.
async fn two_item_coordinator(dir: &Path) -> TestCoordinator {
    TestCoordinator::start_with_limits(
        &dir.join("coord"),
        &["KAZ"],
        tally::support::config::Limits {
            max_items_per_snapshot: 2,
            ..Default::default()
        },
    )
    .await
}

/// `tally node submit` signed its two-item export as KAZ's sequence 1 and
/// got it accepted.
#[track_caller]
fn assert_signed_and_accepted_as_first(submit: &std::process::Output) {
    let out = String::from_utf8_lossy(&submit.stdout);
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    assert!(
        out.contains("as sequence 1 (2 items)") && out.contains("accepted: state KAZ sequence 1"),
        "{out}"
    );
}

/// A snapshot the coordinator refuses for its content (here: more items than
/// it accepts) is removed from the outbox, with the reason; the next export
/// takes its sequence. Left pending, it would be resent, and refused, first
/// by every later submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_node_submit_frees_the_sequence_of_a_snapshot_refused_for_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let coord = two_item_coordinator(dir.path()).await;
    let cfg = node_config(dir.path(), "KAZ", &coord.url(), "outbox");
    let too_big = cli_node_submit(&cfg, write_export(dir.path(), "three.csv", EXPORT_1)).await;
    assert!(!too_big.status.success());
    let err = String::from_utf8_lossy(&too_big.stderr);
    assert!(
        err.contains("accepts at most 2")
            && err.contains("the next export submitted takes sequence 1"),
        "{err}"
    );
    let fine = cli_node_submit(&cfg, write_export(dir.path(), "two.csv", EXPORT_2)).await;
    assert_signed_and_accepted_as_first(&fine);
    assert!(coord.store.equivocations().unwrap().is_empty());
    coord.stop().await;
}

/// Two snapshots signed while the coordinator was away, the older refused
/// for its content: the younger chains on it and could never be accepted,
/// so both leave the outbox and the node moves on instead of resending the
/// refused one before every later export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pending_snapshot_takes_the_ones_chained_on_it_out_of_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let coord = two_item_coordinator(dir.path()).await;
    let cfg = node_config(dir.path(), "KAZ", &coord.url(), "outbox");
    let too_big = write_export(dir.path(), "three.csv", EXPORT_1);
    let fine = write_export(dir.path(), "two.csv", EXPORT_2);
    let node = open_node(&cfg);
    node.prepare(&too_big, None, None).unwrap();
    node.prepare(&fine, None, None).unwrap();
    assert_eq!(node.outbox().pending().unwrap().len(), 2);
    drop(node);
    drop(open_node(&cfg));

    let refused = cli_node_submit(&cfg, fine.clone()).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("accepts at most 2")
            && err.contains("nor for sequence 2, signed after it")
            && err.contains("the next export submitted takes sequence 1"),
        "{err}"
    );
    drop(open_node(&cfg));
    assert_signed_and_accepted_as_first(&cli_node_submit(&cfg, fine).await);
    let node = open_node(&cfg);
    assert!(node.outbox().pending().unwrap().is_empty());
    assert_eq!(node.outbox().entries().unwrap().len(), 1);
    assert!(coord.store.equivocations().unwrap().is_empty());
    drop(node);
    coord.stop().await;
}

/// An outbox restored from an older backup ends before the coordinator's
/// chain: signing its next sequence would fork the chain (an equivocation on
/// the state's record), so the node signs nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_restored_from_an_older_backup_signs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(&dir.path().join("coord"), &["KAZ"]).await;
    let cfg = node_config(dir.path(), "KAZ", &coord.url(), "outbox");
    let outbox = dir.path().join("outbox");
    let backup = dir.path().join("backup");

    let node = open_node(&cfg);
    node.prepare(&write_export(dir.path(), "1.csv", EXPORT_1), None, None)
        .unwrap();
    node.submit_pending().await.unwrap();
    drop(node);
    copy_dir(&outbox, &backup);
    let node = open_node(&cfg);
    node.prepare(&write_export(dir.path(), "2.csv", EXPORT_2), None, None)
        .unwrap();
    node.submit_pending().await.unwrap();
    drop(node);
    std::fs::remove_dir_all(&outbox).unwrap();
    copy_dir(&backup, &outbox);

    // Wait for the last node's outbox lock to go, then try the CLI.
    drop(open_node(&cfg));
    let third = write_export(
        dir.path(),
        "3.csv",
        "model,serial,status,site,counterparty\n9K38,N-1,in_service,,\n",
    );
    let refused = cli_node_submit(&cfg, third).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("this outbox ends at sequence 1")
            && err.contains("up to sequence 2")
            && err.contains("nothing was signed"),
        "{err}"
    );
    let node = open_node(&cfg);
    assert_eq!(node.outbox().last().unwrap().unwrap().sequence(), 1);
    assert!(coord.store.equivocations().unwrap().is_empty());
    drop(node);
    coord.stop().await;
}
