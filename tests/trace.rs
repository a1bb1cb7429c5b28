//! The custody trace through the real coordinator: the trail over gRPC, its
//! evidence bundle checked by the library and by `tally verify`, and what
//! happens when a bundle is altered, a key is missing or nobody reported
//! the item.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ed25519_dalek::VerifyingKey;
use tally::evidence::{self, Bundle, BundleError, EntryError};
use tally::item::{Item, Status, Status::*};
use tally::operator::trace_view::display_width;
use tally::proto::{self, trace_client::TraceClient};
use tally::serial::CanonicalRule;
use tally::snapshot::leaf::leaves;
use tally::snapshot::{SnapshotDigest, build_snapshot, sort_items};
use tally::state::StateCode;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

/// One inventory row: (model, serial, status, site, counterparty).
type Line<'a> = (&'a str, &'a str, Status, &'a str, Option<&'a str>);

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A signed snapshot taken at `as_of`, its leaves cut into chunks of
/// `per_chunk`, so a key's rows can straddle chunk boundaries.
fn snapshot_at(
    st: &str,
    sequence: u64,
    previous: SnapshotDigest,
    as_of: i64,
    lines: &[Line<'_>],
    per_chunk: usize,
) -> TestSnapshot {
    let rule = CanonicalRule::default();
    let mut items: Vec<Item> = lines
        .iter()
        .map(|(m, s, status, site, cp)| {
            Item::new(m, s, *status, site, cp.map(state), &rule).expect("valid item")
        })
        .collect();
    sort_items(&mut items);
    let unsigned = build_snapshot(state(st), sequence, as_of, previous, &items);
    let all = unsigned.chunks.concat();
    let leaf_bytes: Vec<&[u8]> = leaves(&all).map(|l| l.expect("leaf").1).collect();
    TestSnapshot {
        signed: unsigned.header.sign(&state_key(st)),
        chunks: leaf_bytes.chunks(per_chunk).map(|c| c.concat()).collect(),
    }
}

/// Neighbours of the traced key on both sides, so that the binary search
/// has something to get wrong.
const FILLERS: [Line<'static>; 4] = [
    ("9K38", "KA011", InService, "Depot 1", None),
    ("9K38", "KA013", InStorage, "Depot 1", None),
    ("9M39", "B1", InService, "Depot 2", None),
    ("AK-74M", "X1", Lost, "", None),
];

fn with_fillers<'a>(lines: &[Line<'a>]) -> Vec<Line<'a>> {
    let mut all = FILLERS.to_vec();
    all.extend_from_slice(lines);
    all
}

/// RUS writes serial KA012 in Cyrillic (`ка-0 12`), KAZ in Latin
/// (`KA-012`, `KA012`), over several sequences; the trail must hold, in this
/// order (by as-of, then state, sequence and row):
///
/// | # | snapshot | as of | row |
/// | --- | --- | --- | --- |
/// | 0 | RUS 1 | T0+100 | `9K38` `ка-0 12` in_service, Арсенал 3 |
/// | 1 | KAZ 2 | T0+150 | `9K38` `KA-012` in_storage, Depot 7 |
/// | 2 | KAZ 3 | T0+200 | `9K38` `KA012` in_service, Depot 7 |
/// | 3 | RUS 2 | T0+200 | `9K38` `ка-0 12` transferred_out to KAZ |
/// | 4 | RUS 2 | T0+200 | `9К38` (Cyrillic К) `KA 012` in_service, Депо 2 |
///
/// KAZ 1 and RUS 3 do not list the key.
async fn submit_history(coord: &TestCoordinator) {
    let mut client = coord.client().await;
    let mut previous: BTreeMap<&str, SnapshotDigest> = BTreeMap::new();
    let history: Vec<(&str, u64, i64, Vec<Line<'_>>)> = vec![
        (
            "RUS",
            1,
            T0 + 100,
            with_fillers(&[("9K38", "ка-0 12", InService, "Арсенал 3", None)]),
        ),
        ("KAZ", 1, T0 + 50, with_fillers(&[])),
        (
            "KAZ",
            2,
            T0 + 150,
            with_fillers(&[("9K38", "KA-012", InStorage, "Depot 7", None)]),
        ),
        (
            "RUS",
            2,
            T0 + 200,
            with_fillers(&[
                ("9K38", "ка-0 12", TransferredOut, "Арсенал 3", Some("KAZ")),
                ("9К38", "KA 012", InService, "Депо 2", None),
            ]),
        ),
        (
            "KAZ",
            3,
            T0 + 200,
            with_fillers(&[("9K38", "KA012", InService, "Depot 7", None)]),
        ),
        ("RUS", 3, T0 + 300, with_fillers(&[])),
    ];
    for (st, sequence, as_of, lines) in history {
        let prev = previous.get(st).copied().unwrap_or(SnapshotDigest::GENESIS);
        let snap = snapshot_at(st, sequence, prev, as_of, &lines, 2);
        submit(&mut client, &snap)
            .await
            .unwrap_or_else(|e| panic!("{st} {sequence}: {e}"));
        previous.insert(st, snap.digest());
    }
}

async fn trace_client(coord: &TestCoordinator) -> TraceClient<Channel> {
    TraceClient::connect(coord.url()).await.expect("connect")
}

async fn trace(
    client: &mut TraceClient<Channel>,
    model: &str,
    serial: &str,
) -> Result<proto::TraceItemResponse, tonic::Status> {
    client
        .trace_item(proto::TraceItemRequest {
            model: model.into(),
            serial: serial.into(),
        })
        .await
        .map(|r| r.into_inner())
}

fn keys(states: &[&str]) -> BTreeMap<StateCode, VerifyingKey> {
    states
        .iter()
        .map(|s| (state(s), state_key(s).verifying_key()))
        .collect()
}

/// Writes `STATE.pub` files (as `tally keygen` does) and returns `--key` arguments.
fn key_args(dir: &Path, states: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for s in states {
        let path = dir.join(format!("{s}.pub"));
        std::fs::write(
            &path,
            format!("{}\n", hex::encode(state_key(s).verifying_key().to_bytes())),
        )
        .expect("write public key");
        args.push("--key".to_string());
        args.push(format!("{s}={}", path.display()));
    }
    args
}

/// Runs the `tally` binary off the async runtime (the coordinator it talks
/// to runs on the runtime's workers).
async fn tally(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tally")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_lists_every_row_of_every_state_in_order_with_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    submit_history(&coord).await;
    // Every accepted snapshot kept its Merkle block roots: the proofs below
    // come from them (each is checked against the signed root).
    for st in ["RUS", "KAZ"] {
        for s in coord.store.list(state(st), 1, usize::MAX).unwrap() {
            let blocks = coord.store.block_roots(&s.digest).unwrap().expect("kept");
            // One root per aligned block of 2^log2 leaves, the last one
            // possibly partial.
            let block = 1u64 << blocks.log2;
            let items = s.signed.header.item_count;
            assert_eq!(
                blocks.roots.len() as u64,
                items.div_ceil(block),
                "{items} items"
            );
        }
    }
    let mut client = trace_client(&coord).await;

    // Asked in yet another spelling: Cyrillic к in the model, lower case and a space.
    let r = trace(&mut client, "9к38", "ka 012").await.unwrap();
    assert_eq!((r.model.as_str(), r.serial.as_str()), ("9K38", "KA012"));
    type Expected<'a> = (
        &'a str,
        u64,
        i64,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    let expected: [Expected<'_>; 5] = [
        (
            "RUS",
            1,
            T0 + 100,
            "in_service",
            "Арсенал 3",
            "",
            "9K38",
            "ка-0 12",
        ),
        (
            "KAZ",
            2,
            T0 + 150,
            "in_storage",
            "Depot 7",
            "",
            "9K38",
            "KA-012",
        ),
        (
            "KAZ",
            3,
            T0 + 200,
            "in_service",
            "Depot 7",
            "",
            "9K38",
            "KA012",
        ),
        (
            "RUS",
            2,
            T0 + 200,
            "transferred_out",
            "Арсенал 3",
            "KAZ",
            "9K38",
            "ка-0 12",
        ),
        (
            "RUS",
            2,
            T0 + 200,
            "in_service",
            "Депо 2",
            "",
            "9К38",
            "KA 012",
        ),
    ];
    let got: Vec<Expected<'_>> = r
        .entries
        .iter()
        .map(|e| {
            (
                e.state.as_str(),
                e.sequence,
                e.as_of_unix_ms,
                e.status.as_str(),
                e.site.as_str(),
                e.counterparty.as_str(),
                e.model.as_str(),
                e.serial.as_str(),
            )
        })
        .collect();
    assert_eq!(got, expected);

    // Evidence: the header the state signed, and the leaf at its position.
    for e in &r.entries {
        let ev = e.evidence.as_ref().expect("evidence");
        assert_eq!(ev.header.len(), 116);
        assert_eq!(ev.signature.len(), 64);
        let header = tally::snapshot::SnapshotHeader::decode(&ev.header).expect("header");
        assert_eq!(
            (header.state.as_str(), header.sequence),
            (e.state.as_str(), e.sequence)
        );
        assert_eq!(ev.tree_size, header.item_count);
        assert!(ev.proof.iter().all(|p| p.len() == 32));
    }
    // RUS 2 lists the key twice, on both sides of a chunk boundary: two rows,
    // consecutive leaves (fillers KA011 first).
    let rus2: Vec<u64> = r.entries[3..]
        .iter()
        .map(|e| e.evidence.as_ref().unwrap().leaf_index)
        .collect();
    assert_eq!(rus2, [1, 2]);

    // The library verifies the bundle with both keys.
    let bundle = tally_wire::evidence::bundle_from_trace(&r).unwrap();
    let verified = evidence::verify(&bundle, &keys(&["RUS", "KAZ"])).unwrap();
    assert_eq!(verified.entries.len(), 5);

    // Alerts about the key, and the custody summary.
    let kinds: Vec<&str> = r.alerts.iter().map(|a| a.kind.as_str()).collect();
    for kind in ["held_by_several_states", "duplicate_in_snapshot"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let custody = r.custody.as_ref().expect("custody");
    assert!(!custody.never_reported);
    assert_eq!(custody.held_now_by, ["KAZ"]);

    // A key nobody reported: an empty trail, not an error.
    let none = trace(&mut client, "9K38", "ZZ-999").await.unwrap();
    assert_eq!(none.serial, "ZZ999");
    assert!(none.entries.is_empty() && none.alerts.is_empty());
    assert!(none.custody.expect("custody").never_reported);

    // A model or serial with nothing left once canonicalised is refused,
    // naming the field.
    for (model, serial, field) in [("9K38", " - ", "serial"), ("", "KA012", "model")] {
        let err = trace(&mut client, model, serial).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    coord.stop().await;
}

/// A field of a megabyte is refused with a message a person can read, not
/// one that repeats the field (as a gRPC status it would not even fit in
/// the response headers), and the coordinator keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_fields_get_short_errors() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["KAZ"]).await;
    let huge = "Ж".repeat(512 * 1024);
    let mut client = trace_client(&coord).await;
    let mut alerts = proto::alerts_client::AlertsClient::connect(coord.url())
        .await
        .unwrap();
    let mut snapshots = coord.client().await;
    let refusals = [
        (
            "trace serial",
            trace(&mut client, "9K38", &huge).await.map(drop),
        ),
        (
            "trace model",
            trace(&mut client, &huge, "A1").await.map(drop),
        ),
        (
            "alert kind filter",
            alerts
                .list_alerts(proto::ListAlertsRequest {
                    kind: huge.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "alert model filter",
            alerts
                .list_alerts(proto::ListAlertsRequest {
                    model: huge.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "page token",
            alerts
                .list_alerts(proto::ListAlertsRequest {
                    page_token: huge.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "snapshot state",
            snapshots
                .list_snapshots(proto::ListSnapshotsRequest {
                    state: huge.clone(),
                    from_sequence: 0,
                    limit: 1,
                })
                .await
                .map(drop),
        ),
    ];
    for (what, refused) in refusals {
        let status = refused.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().len() < 1024,
            "{what}: a {} byte message",
            status.message().len()
        );
    }
    let err = trace(&mut client, "9K38", &huge).await.unwrap_err();
    assert!(
        err.message()
            .starts_with("serial is 1048576 bytes long; at most 1024 bytes are allowed"),
        "{}",
        err.message()
    );
    // Within the bound, a long spelling of a short serial is a lookup:
    // full-width letters, three bytes each, and separators.
    let long_spelling = format!("{}Ａ１", "-".repeat(1_000));
    let none = trace(&mut client, "9K38", &long_spelling).await.unwrap();
    assert_eq!(none.serial, "A1");
    assert!(none.custody.expect("custody").never_reported);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_bundle_from_tally_trace_verifies_offline_and_any_altered_byte_fails() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    submit_history(&coord).await;
    let work = tempfile::tempdir().unwrap();
    let file: PathBuf = work.path().join("trail.json");
    let file_arg = file.display().to_string();

    // tally trace --evidence, as JSON for scripts.
    let out = tally(vec![
        "trace".into(),
        "9К38".into(),
        "ka-012".into(),
        "--coordinator".into(),
        coord.url(),
        "--format".into(),
        "json".into(),
        "--evidence".into(),
        file_arg.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["format"], "tally-trace/v1");
    assert_eq!(json["key"]["serial"], "KA012");
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(5));
    assert_eq!(json["entries"][0]["serial"], "ка-0 12");
    assert_eq!(json["entries"][0]["evidence"]["tree_size"], 5);
    assert_eq!(json["custody"]["held_now_by"][0], "KAZ");
    assert!(
        text(&out.stderr).contains("tally verify"),
        "{}",
        text(&out.stderr)
    );

    // The table fits in 100 columns.
    let out = tally(vec![
        "trace".into(),
        "9K38".into(),
        "KA012".into(),
        "--coordinator".into(),
        coord.url(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("ка-0 12") && table.contains("KA-012"),
        "{table}"
    );
    for line in table.lines() {
        assert!(display_width(line) <= 100, "too wide: {line}");
    }
    coord.stop().await;

    // tally verify, with no coordinator running.
    let both = key_args(work.path(), &["RUS", "KAZ"]);
    let mut args = vec!["verify".to_string(), file_arg.clone()];
    args.extend(both.clone());
    let out = tally(args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verified 5 entries for 9K38/KA012"));

    // Every single-byte change of the file fails verification.
    let bytes = std::fs::read(&file).unwrap();
    let k = keys(&["RUS", "KAZ"]);
    evidence::verify_file(&bytes, &k).expect("the file verifies");
    for at in 0..bytes.len() {
        let mut altered = bytes.clone();
        altered[at] ^= 0x01;
        assert!(
            evidence::verify_file(&altered, &k).is_err(),
            "flipping byte {at} went unnoticed"
        );
    }

    // The binary says which entry fails: a signature byte of entry 3, a proof
    // byte of entry 1, a broken JSON document, an edit in the layout.
    let nth = |needle: &str, n: usize| {
        text(&bytes)
            .match_indices(needle)
            .nth(n)
            .map(|(i, _)| i + needle.len())
            .expect("field present")
    };
    let other_hex = |b: u8| if b == b'0' { b'1' } else { b'0' };
    let sig = nth("\"signature\": \"", 3) + 10;
    let proof = nth("\"proof\": [\n", 1) + 20;
    let cases: Vec<(usize, u8, &str)> = vec![
        (
            sig,
            other_hex(bytes[sig]),
            "entry 3 (RUS #2): the signature does not verify",
        ),
        (
            proof,
            other_hex(bytes[proof]),
            "entry 1 (KAZ #2): the inclusion proof does not lead",
        ),
        (0, b'z', "not a valid evidence bundle: line 1, column 1"),
        // "{\n" becomes "{ ": still JSON, with the same content.
        (1, b' ', "it was altered after it was written"),
    ];
    for (at, byte, message) in cases {
        let mut altered = bytes.clone();
        assert_ne!(altered[at], byte);
        altered[at] = byte;
        let bad = work.path().join(format!("altered-{at}.json"));
        std::fs::write(&bad, &altered).unwrap();
        let mut args = vec!["verify".to_string(), bad.display().to_string()];
        args.extend(both.clone());
        let out = tally(args).await;
        assert!(!out.status.success(), "byte {at}: accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("NOT valid evidence") && err.contains(message),
            "byte {at}: {err}"
        );
    }

    // A missing key names the state, in the library and in the binary.
    match evidence::verify(&Bundle::from_json(&bytes).unwrap(), &keys(&["RUS"])) {
        Err(BundleError::Entry {
            index: 1,
            source: EntryError::MissingKey { state },
            ..
        }) => assert_eq!(state.as_str(), "KAZ"),
        other => panic!("expected a missing KAZ key, got {other:?}"),
    }
    let mut args = vec!["verify".to_string(), file_arg.clone()];
    args.extend(key_args(work.path(), &["RUS"]));
    let out = tally(args).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no public key was given for KAZ") && err.contains("--key KAZ="),
        "{err}"
    );
}

/// An item nobody reported: `tally trace` succeeds with an empty trail, its
/// bundle has no entries, and `tally verify` accepts it while saying it
/// proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_serial_gives_an_empty_trail_and_an_empty_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    submit_history(&coord).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("none.json").display().to_string();
    let out = tally(vec![
        "trace".into(),
        "9K38".into(),
        "NOPE-1".into(),
        "--coordinator".into(),
        coord.url(),
        "--evidence".into(),
        file.clone(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("9K38/NOPE1: no stored snapshot lists this item"),
        "{table}"
    );
    assert!(
        table.contains("no member state has ever reported this item"),
        "{table}"
    );

    let out = tally(vec!["verify".into(), file]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("proves nothing"));

    // And an empty model is refused by the coordinator, naming the field.
    let out = tally(vec![
        "trace".into(),
        "--coordinator".into(),
        coord.url(),
        "--".into(),
        "-".into(),
        "KA012".into(),
    ])
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("model"),
        "{err}"
    );
    coord.stop().await;
}

/// The trail's alerts come from an index built by the first trace; alerts
/// opened after that must appear in later traces all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_opened_after_a_trace_appear_in_the_next_trace() {
    let dir = tempfile::tempdir().unwrap();
    let coord = TestCoordinator::start(dir.path(), &["RUS", "KAZ"]).await;
    let mut snapshots = coord.client().await;
    let mut client = trace_client(&coord).await;
    let held = ("9K38", "KA012", InService, "Depot 1", None);
    let rus = snapshot_at(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        T0 + 100,
        &with_fillers(&[held]),
        2,
    );
    submit(&mut snapshots, &rus).await.expect("RUS 1");
    let kaz1 = snapshot_at(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        T0 + 100,
        &[("9M39", "K1", InService, "", None)],
        2,
    );
    submit(&mut snapshots, &kaz1).await.expect("KAZ 1");
    let before = trace(&mut client, "9K38", "KA012").await.unwrap();
    assert_eq!(before.entries.len(), 1);
    assert!(before.alerts.is_empty(), "{:?}", before.alerts);

    // KAZ now lists the same launcher: held by two states.
    let kaz2 = snapshot_at(
        "KAZ",
        2,
        kaz1.digest(),
        T0 + 200,
        &[("9K38", "KA-012", InService, "", None)],
        2,
    );
    submit(&mut snapshots, &kaz2).await.expect("KAZ 2");
    let after = trace(&mut client, "9K38", "KA012").await.unwrap();
    assert_eq!(after.entries.len(), 2);
    let kinds: Vec<&str> = after.alerts.iter().map(|a| a.kind.as_str()).collect();
    assert!(kinds.contains(&"held_by_several_states"), "{kinds:?}");
    // Exactly the stored alerts about this key.
    let alerts = coord.reconciler.as_ref().expect("running").alerts();
    let rule = CanonicalRule::default();
    let key = tally::serial::ItemKey {
        model: tally::serial::CanonicalModel::from_raw("9K38", &rule).unwrap(),
        serial: tally::serial::CanonicalSerial::from_raw("KA012", &rule).unwrap(),
    };
    let mut expected: Vec<u64> = alerts
        .all()
        .unwrap()
        .into_iter()
        .filter(|a| a.key.item.as_ref() == Some(&key))
        .map(|a| a.id)
        .collect();
    expected.sort_unstable();
    let served: Vec<u64> = after.alerts.iter().map(|a| a.id).collect();
    assert_eq!(served, expected);
    coord.stop().await;
}
