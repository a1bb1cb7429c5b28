//! `tally export` / `tally import`: a store survives the round trip with the
//! same alerts, traces and receipts; a tampered export is refused with the
//! file and the reason named; a store in use is not exported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tally::coordinator::archive::{self, ExportSettings, ImportOptions, Manifest, SnapshotFiles};
use tally::item::Status::*;
use tally::merkle::MerkleBuilder;
use tally::proto::{
    self, alerts_client::AlertsClient, seizures_client::SeizuresClient, trace_client::TraceClient,
};
use tally::reconcile::EngineConfig;
use tally::serial::CanonicalRule;
use tally::snapshot::SnapshotDigest;

use crate::common::*;

const MEMBERS: [&str; 3] = ["RUS", "BLR", "KAZ"];

fn settings() -> ExportSettings {
    ExportSettings {
        coordinator_key: coordinator_key().verifying_key(),
        members: MEMBERS
            .iter()
            .map(|s| (state(s), state_key(s).verifying_key()))
            .collect(),
        canonical: CanonicalRule::default(),
        engine: EngineConfig::default(),
    }
}

/// Exports `data`, waiting briefly while the stopped in-process coordinator's
/// sled database still holds its lock (sled releases it only when its
/// background flusher thread notices the last handle is gone).
fn export(data: &Path, out: &Path) -> archive::Summary {
    try_export(data, out).expect("export")
}

fn try_export(data: &Path, out: &Path) -> Result<archive::Summary, archive::ExportError> {
    for _ in 0..250 {
        match archive::export(data, &settings(), out, 1_800_000_000_000) {
            Err(archive::ExportError::InUse { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    panic!("the store was still in use 5 s after the coordinator stopped");
}

/// Submits a history with alerts of several kinds, two equivocations (a conflict and a fork), a
/// seizure report and operator actions (including on an alert that later
/// clears), then stops the coordinator.
async fn build_history(data: &Path) {
    let coord = TestCoordinator::start(data, &MEMBERS).await;
    let mut snaps = coord.client().await;
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "A1", InService, None),
            ("9K38", "A2", InService, None),
            ("9M39", "B1", InService, None),
            ("9M39", "B2", Lost, None),
        ]),
    );
    let blr1 = snapshot(
        "BLR",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "A1", InService, None),
            ("9P39", "C1", Destroyed, None),
        ]),
    );
    let kaz1 = snapshot(
        "KAZ",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9M39", "B3", TransferredOut, Some("RUS"))]),
    );
    for s in [&rus1, &blr1, &kaz1] {
        submit(&mut snaps, s).await.expect("accepted");
    }
    let rus2 = snapshot(
        "RUS",
        2,
        rus1.digest(),
        &items(&[
            ("9K38", "A1", InService, None),
            ("9M39", "B1", InService, None),
            ("9M39", "B2", Lost, None),
            ("9P39", "C1", InService, None),
        ]),
    );
    submit(&mut snaps, &rus2).await.expect("accepted");
    let conflicting = snapshot(
        "RUS",
        2,
        rus1.digest(),
        &items(&[("9M39", "B1", InService, None)]),
    );
    let refused = submit(&mut snaps, &conflicting).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    // And a fork: BLR's next snapshot linked to something else.
    let fork = snapshot(
        "BLR",
        2,
        SnapshotDigest([9; 32]),
        &items(&[("9P39", "C1", InService, None)]),
    );
    let refused = submit(&mut snaps, &fork).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let blr2 = snapshot(
        "BLR",
        2,
        blr1.digest(),
        &items(&[("9P39", "C1", Destroyed, None)]),
    );
    submit(&mut snaps, &blr2).await.expect("accepted");

    let mut seizures = SeizuresClient::connect(coord.url()).await.unwrap();
    let seized = |model: &str, serial: &str| proto::SeizedItem {
        model: model.into(),
        serial: serial.into(),
        seized_at_unix_ms: 1_790_000_500_000,
        place: "Border crossing".into(),
        note: "found in a truck".into(),
    };
    seizures
        .report_seizures(proto::ReportSeizuresRequest {
            items: vec![seized("9M39", "B2"), seized("9K38", "ZZ9")],
        })
        .await
        .expect("seizures");

    let mut alerts = AlertsClient::connect(coord.url()).await.unwrap();
    let all = list_alerts(&mut alerts).await;
    let find = |kind: &str| {
        all.iter()
            .find(|a| a.kind == kind && a.status == proto::AlertStatus::Open as i32)
            .unwrap_or_else(|| panic!("an open {kind} alert"))
            .id
    };
    let disappeared = find("unaccounted_disappearance");
    let transfer = find("transfer_not_received");
    let seized_alert = find("seized_item");
    alerts
        .acknowledge_alert(proto::AcknowledgeAlertRequest {
            id: disappeared,
            note: "asked RUS".into(),
        })
        .await
        .unwrap();
    alerts
        .resolve_alert(proto::ResolveAlertRequest {
            id: transfer,
            reason: proto::ResolutionReason::TransferConfirmed as i32,
            note: "RUS confirms by letter".into(),
        })
        .await
        .unwrap();
    alerts
        .reopen_alert(proto::ReopenAlertRequest {
            id: transfer,
            note: "the letter was about another launcher".into(),
        })
        .await
        .unwrap();
    alerts
        .resolve_alert(proto::ResolveAlertRequest {
            id: seized_alert,
            reason: proto::ResolutionReason::ReferredForInvestigation as i32,
            note: "police".into(),
        })
        .await
        .unwrap();
    // A2 comes back: the acknowledged disappearance clears.
    let rus3 = snapshot(
        "RUS",
        3,
        rus2.digest(),
        &items(&[
            ("9K38", "A1", InService, None),
            ("9K38", "A2", InService, None),
            ("9M39", "B1", InService, None),
            ("9M39", "B2", Lost, None),
            ("9P39", "C1", InService, None),
        ]),
    );
    submit(&mut snaps, &rus3).await.expect("accepted");
    coord.stop().await;
}

async fn list_alerts(client: &mut AlertsClient<tonic::transport::Channel>) -> Vec<proto::Alert> {
    client
        .list_alerts(proto::ListAlertsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list alerts")
        .into_inner()
        .alerts
}

/// An alert without the times the reconciler took from the wall clock
/// (the replay reconciles at each receipt's acceptance time instead).
/// Operators' action times are kept: they must be identical.
fn without_clock_times(mut a: proto::Alert) -> proto::Alert {
    a.opened_at_unix_ms = 0;
    a.updated_at_unix_ms = 0;
    for h in &mut a.history {
        if matches!(h.action.as_str(), "opened" | "updated" | "cleared") {
            h.at_unix_ms = 0;
        }
    }
    a
}

/// What a coordinator serves about the store: alerts, traces, receipts,
/// snapshots' bytes and seizure reports.
#[derive(Debug, PartialEq)]
struct Served {
    alerts: Vec<proto::Alert>,
    traces: Vec<proto::TraceItemResponse>,
    snapshot_lists: Vec<proto::ListSnapshotsResponse>,
    snapshot_bytes: Vec<(tally::snapshot::SignedHeader, Vec<u8>)>,
    seizure_reports: Vec<proto::SeizureReport>,
}

async fn served(data: &Path) -> Served {
    let coord = TestCoordinator::start(data, &MEMBERS).await;
    let mut alerts = AlertsClient::connect(coord.url()).await.unwrap();
    let alert_list = list_alerts(&mut alerts)
        .await
        .into_iter()
        .map(without_clock_times)
        .collect();
    let mut trace = TraceClient::connect(coord.url()).await.unwrap();
    let mut traces = Vec::new();
    for (model, serial) in [
        ("9K38", "A1"),
        ("9K38", "A2"),
        ("9M39", "B2"),
        ("9M39", "B3"),
        ("9P39", "C1"),
        ("9K38", "ZZ9"),
    ] {
        traces.push(
            trace
                .trace_item(proto::TraceItemRequest {
                    model: model.into(),
                    serial: serial.into(),
                })
                .await
                .expect("trace")
                .into_inner(),
        );
    }
    let mut snaps = coord.client().await;
    let mut snapshot_lists = Vec::new();
    let mut snapshot_bytes = Vec::new();
    for st in MEMBERS {
        let list = snaps
            .list_snapshots(proto::ListSnapshotsRequest {
                state: st.into(),
                from_sequence: 1,
                limit: 0,
            })
            .await
            .expect("list snapshots")
            .into_inner();
        for info in &list.snapshots {
            let sequence = info.header.as_ref().expect("header").sequence;
            snapshot_bytes.push(fetch_and_verify(&mut snaps, st, sequence).await);
        }
        snapshot_lists.push(list);
    }
    let seizure_reports = crate::common::all_seizure_reports(&coord.url()).await;
    coord.stop().await;
    Served {
        alerts: alert_list,
        traces,
        snapshot_lists,
        snapshot_bytes,
        seizure_reports,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_identical_alerts_traces_and_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    build_history(&original).await;

    let out = tmp.path().join("export");
    let exported = export(&original, &out);
    assert_eq!(
        exported.counts,
        archive::Counts {
            snapshots: 6,
            items: 4 + 2 + 1 + 4 + 1 + 5,
            equivocations: 2,
            seizure_reports: 1,
            operator_actions: 4,
            // Recorded as they happened: the two refused submissions (the
            // conflict and the fork), the seizure report and the four
            // operator actions. Accepted submissions have their receipts.
            audit_records: 2 + 1 + 4,
        }
    );
    let restored = tmp.path().join("restored");
    let imported = archive::import(&out, &restored, &ImportOptions::default()).expect("import");
    assert_eq!(imported.counts, exported.counts);
    assert_eq!(imported.skipped_actions, Vec::<String>::new());

    let before = served(&original).await;
    let after = served(&restored).await;
    // The history really has what the comparison is about.
    let statuses: Vec<(&str, i32)> = before
        .alerts
        .iter()
        .map(|a| (a.kind.as_str(), a.status))
        .collect();
    for expected in [
        ("unaccounted_disappearance", proto::AlertStatus::Cleared),
        ("transfer_not_received", proto::AlertStatus::Open),
        ("seized_item", proto::AlertStatus::Resolved),
        ("held_by_several_states", proto::AlertStatus::Cleared),
        ("conflicting_submission", proto::AlertStatus::Open),
        ("disposed_item_reappears", proto::AlertStatus::Open),
    ] {
        assert!(
            statuses.contains(&(expected.0, expected.1 as i32)),
            "{expected:?} in {statuses:?}"
        );
    }
    assert_eq!(before.alerts, after.alerts);
    assert_eq!(before.traces, after.traces);
    assert_eq!(before.snapshot_lists, after.snapshot_lists);
    assert_eq!(before.snapshot_bytes, after.snapshot_bytes);
    assert_eq!(before.seizure_reports, after.seizure_reports);

    // An export of the imported store is the same export (but for its time).
    let again = tmp.path().join("again");
    export(&restored, &again);
    for f in [
        "manifest.json",
        "operator-actions.json",
        "equivocations.json",
        "audit-trail.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_a_store_a_coordinator_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let coord = TestCoordinator::start(&data, &MEMBERS).await;
    let out = tmp.path().join("export");
    let err = archive::export(&data, &settings(), &out, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the data directory {} is in use by a running coordinator (the store is locked): stop the coordinator first, then export",
            data.display()
        )
    );
    assert!(!out.exists());
    coord.stop().await;

    let err = archive::export(&tmp.path().join("nothing"), &settings(), &out, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} holds no Tally store (no sled database in it)",
            tmp.path().join("nothing").display()
        )
    );
}

/// A small export: RUS 1, RUS 2 and BLR 1.
async fn small_export(tmp: &Path) -> PathBuf {
    let data = tmp.join("data");
    let coord = TestCoordinator::start(&data, &MEMBERS).await;
    let mut snaps = coord.client().await;
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[
            ("9K38", "A1", InService, None),
            ("9K38", "A2", InService, None),
        ]),
    );
    let rus2 = snapshot(
        "RUS",
        2,
        rus1.digest(),
        &items(&[("9K38", "A1", InService, None)]),
    );
    let blr1 = snapshot(
        "BLR",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A2", InService, None)]),
    );
    for s in [&rus1, &rus2, &blr1] {
        submit(&mut snaps, s).await.expect("accepted");
    }
    // Refused (not a member): the audit trail gets a record.
    let stranger = snapshot(
        "TJK",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A9", InService, None)]),
    );
    submit(&mut snaps, &stranger)
        .await
        .expect_err("not a member");
    coord.stop().await;
    let out = tmp.join("export");
    export(&data, &out);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest(dir: &Path, m: &Manifest) {
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// Brings the manifest's hash and size of `file` in line with its bytes,
/// as someone covering their tracks would.
fn rehash(dir: &Path, file: &str) {
    let mut m = read_manifest(dir);
    let bytes = std::fs::read(dir.join(file)).unwrap();
    let entry = m.files.iter_mut().find(|f| f.path == file).unwrap();
    entry.sha256 = sha256_hex(&bytes);
    entry.bytes = bytes.len() as u64;
    write_manifest(dir, &m);
}

fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Flips the last hex digit of a JSON string field.
fn flip_hex(v: &mut serde_json::Value, field: &str) {
    let s = v[field].as_str().unwrap().to_string();
    let last = if s.ends_with('0') { '1' } else { '0' };
    v[field] = serde_json::Value::String(format!("{}{last}", &s[..s.len() - 1]));
}

/// Imports a tampered copy of `export`; returns the error message, after
/// checking that nothing was left behind.
#[track_caller]
fn refused(export: &Path, tamper: impl FnOnce(&Path)) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("export");
    copy_dir(export, &copy);
    tamper(&copy);
    let target = scratch.path().join("store");
    let err = archive::import(&copy, &target, &ImportOptions::default())
        .expect_err("a tampered export must be refused");
    assert!(!target.exists(), "nothing is left at the target");
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        vec!["export".to_string()],
        "no scratch directory is left"
    );
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_export_is_refused_naming_the_file_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = small_export(tmp.path()).await;
    let rus1 = SnapshotFiles::new(state("RUS"), 1);
    let rus2 = SnapshotFiles::new(state("RUS"), 2);
    let manifest = read_manifest(&out);
    let listed = |path: &str| {
        manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap()
            .sha256
            .clone()
    };

    // The untouched export imports, also into an existing empty directory.
    archive::import(&out, &tmp.path().join("ok"), &ImportOptions::default()).expect("import");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    archive::import(&out, &empty, &ImportOptions::default()).expect("import into an empty dir");
    assert!(empty.join("db").is_file());

    // One flipped byte in an items file: its hash no longer matches.
    let items = std::fs::read(out.join(&rus1.items)).unwrap();
    let site = items.windows(7).position(|w| w == b"Depot 1").unwrap() + 6;
    let mut flipped = items.clone();
    flipped[site] = b'2';
    assert_eq!(
        refused(&out, |d| std::fs::write(d.join(&rus1.items), &flipped)
            .unwrap()),
        format!(
            "{}: SHA-256 is {} but the manifest says {}",
            rus1.items,
            sha256_hex(&flipped),
            listed(&rus1.items)
        )
    );

    // The same byte with the manifest updated: the leaves no longer hash to
    // the signed items root.
    let mut tree = MerkleBuilder::new();
    for leaf in tally::snapshot::leaf::leaves(&flipped) {
        tree.push_leaf(leaf.unwrap().1);
    }
    let header = std::fs::read(out.join(&rus1.header)).unwrap();
    let signed_root = hex::encode(&header[header.len() - 32..]);
    assert_eq!(
        refused(&out, |d| {
            std::fs::write(d.join(&rus1.items), &flipped).unwrap();
            rehash(d, &rus1.items);
        }),
        format!(
            "{}: items do not match the signed header: the items' Merkle root {} does not match the signed items_root {signed_root}",
            rus1.items,
            hex::encode(tree.root())
        )
    );

    // A changed header (its as-of time): it is not what was signed.
    let mut changed = header.clone();
    changed[25 + 3 + 8 + 7] ^= 1;
    assert_eq!(
        refused(&out, |d| {
            std::fs::write(d.join(&rus1.header), &changed).unwrap();
            rehash(d, &rus1.header);
        }),
        format!(
            "{}: its digest is {} but {} was signed for {}",
            rus1.header,
            sha256_hex(&changed),
            rus1.signatures,
            sha256_hex(&header)
        )
    );
    // ... even with the digest next to the signature changed to match.
    assert_eq!(
        refused(&out, |d| {
            std::fs::write(d.join(&rus1.header), &changed).unwrap();
            edit_json(d, &rus1.signatures, |v| {
                v["digest"] = sha256_hex(&changed).into();
            });
            rehash(d, &rus1.header);
            rehash(d, &rus1.signatures);
        }),
        format!(
            "{}: the snapshot header signature does not verify with RUS's public key",
            rus1.signatures
        )
    );

    // A bad state signature, and a bad receipt signature.
    assert_eq!(
        refused(&out, |d| {
            edit_json(d, &rus2.signatures, |v| flip_hex(v, "signature"));
            rehash(d, &rus2.signatures);
        }),
        format!(
            "{}: the snapshot header signature does not verify with RUS's public key",
            rus2.signatures
        )
    );
    assert_eq!(
        refused(&out, |d| {
            edit_json(d, &rus2.signatures, |v| flip_hex(v, "receipt_signature"));
            rehash(d, &rus2.signatures);
        }),
        format!(
            "{}: the receipt signature does not verify with the coordinator's public key",
            rus2.signatures
        )
    );

    // An altered audit record: the chain names it.
    assert_eq!(
        refused(&out, |d| {
            edit_json(d, "audit-trail.json", |v| flip_hex(&mut v[0], "encoding"));
            rehash(d, "audit-trail.json");
        }),
        "audit-trail.json: malformed: audit record 1: bad hash link: SHA-256(previous hash || encoding) \
         is not the stored hash (the record or the one before it was altered)"
    );

    // A deleted file, and a file the manifest does not list.
    assert_eq!(
        refused(&out, |d| std::fs::remove_file(d.join(&rus2.items)).unwrap()),
        format!("{}: listed in the manifest but missing", rus2.items)
    );
    assert_eq!(
        refused(&out, |d| std::fs::write(d.join("notes.txt"), "hello")
            .unwrap()),
        "notes.txt: not listed in the manifest"
    );

    // A whole snapshot taken out, manifest and all: the chain is broken.
    assert_eq!(
        refused(&out, |d| {
            let mut m = read_manifest(d);
            m.snapshots
                .retain(|s| !(s.state == state("RUS") && s.sequence == 1));
            m.files
                .retain(|f| !f.path.contains("RUS/00000000000000000001"));
            m.counts.snapshots -= 1;
            m.counts.items -= 2;
            write_manifest(d, &m);
            for f in [&rus1.header, &rus1.items, &rus1.signatures] {
                std::fs::remove_file(d.join(f)).unwrap();
            }
        }),
        format!(
            "{}: breaks the chain: RUS sequence 2 follows sequence 0",
            rus2.header
        )
    );

    // A snapshot dropped from the snapshot list, its files kept and listed:
    // it would be ignored, the chain cut short in silence.
    assert_eq!(
        refused(&out, |d| {
            let mut m = read_manifest(d);
            m.snapshots
                .retain(|s| !(s.state == state("RUS") && s.sequence == 2));
            m.counts.snapshots -= 1;
            m.counts.items -= 1;
            write_manifest(d, &m);
        }),
        format!(
            "manifest.json: malformed: {} is not a file of any snapshot in the manifest's snapshot list",
            rus2.header
        )
    );

    // A copy of an accepted header recorded as an equivocation (it would
    // open a critical alert against RUS): not one, whether it is named as
    // conflicting with itself or with the snapshot it links to.
    let rus2_header = hex::encode(std::fs::read(out.join(&rus2.header)).unwrap());
    let rus2_signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(&rus2.signatures)).unwrap()).unwrap();
    let rus1_digest = sha256_hex(&std::fs::read(out.join(&rus1.header)).unwrap());
    let rus2_digest = sha256_hex(&std::fs::read(out.join(&rus2.header)).unwrap());
    for conflicts_with in [&rus2_digest, &rus1_digest] {
        assert_eq!(
            refused(&out, |d| {
                edit_json(d, "equivocations.json", |v| {
                    *v = serde_json::json!([{
                        "header": rus2_header,
                        "signature": rus2_signed["signature"],
                        "conflicts_with": conflicts_with,
                        "recorded_at_unix_ms": 1_790_000_000_000i64,
                    }]);
                });
                rehash(d, "equivocations.json");
            }),
            format!(
                "equivocations.json: malformed: entry 0: RUS sequence 2 does not conflict with \
                 {conflicts_with}: it is that snapshot, or links to it as the next one should"
            )
        );
    }

    // With the configuration's keys, a member it does not list is refused:
    // the export would vouch for that state's key itself.
    let mut known = BTreeMap::new();
    for st in ["RUS", "KAZ"] {
        known.insert(state(st), state_key(st).verifying_key());
    }
    let partial = tally::coordinator::archive::ImportOptions {
        coordinator_key: Some(coordinator_key().verifying_key()),
        members: known,
        engine: None,
    };
    let err = archive::import(&out, &tmp.path().join("partial"), &partial).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the export has member state BLR, which the configuration does not list"),
        "{err}"
    );

    // The keys of another deployment.
    let other = tally::coordinator::archive::ImportOptions {
        coordinator_key: Some(state_key("RUS").verifying_key()),
        members: BTreeMap::new(),
        engine: None,
    };
    let err = archive::import(&out, &tmp.path().join("other"), &other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the export's coordinator public key differs from the configuration's: this export is not from this deployment"
    );

    // A target that is a file is named as such, not as "not empty".
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = archive::import(&out, &file, &ImportOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: Not a directory", file.display())),
        "{err}"
    );

    // A store is never imported over another.
    let err =
        archive::import(&out, &tmp.path().join("data"), &ImportOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not empty: import builds a fresh store in a new or empty directory",
            tmp.path().join("data").display()
        )
    );
}

/// A store damaged on disk (a flipped byte in a chunk file) gives no export
/// at all, rather than a backup that only import finds broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporting_a_damaged_store_is_refused_naming_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    small_export(tmp.path()).await;
    let data = tmp.path().join("data");
    let mut damaged = 0;
    for entry in std::fs::read_dir(data.join("leaf-chunks")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(7).position(|w| w == b"Depot 1") {
            bytes[at + 6] = b'2';
            std::fs::write(&path, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the test found no chunk file to damage");
    let out = tmp.path().join("second");
    let message = try_export(&data, &out).unwrap_err().to_string();
    assert!(
        message.starts_with("stored snapshot ")
            && message.contains(" is damaged: ")
            && message.contains("Merkle root")
            && message.ends_with(
                "Nothing was exported; restore the store from a backup or an earlier export"
            ),
        "{message}"
    );
    assert!(!out.exists(), "nothing is left at the target");
    let scratch: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tally-export-"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// Runs the `tally` binary off the async runtime.
async fn tally(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
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
async fn the_commands_export_and_import_through_a_coordinator_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let keys = dir.join("keys");
    tally::support::keys::write_key_pair(&keys, "coordinator", &coordinator_key()).expect("key");
    for st in MEMBERS {
        tally::support::keys::write_key_pair(&keys, st, &state_key(st)).expect("key");
    }
    let mut toml = "listen = \"127.0.0.1:0\"\ninsecure = true\ndata_dir = \"data\"\n\
                    key_file = \"keys/coordinator.key\"\n"
        .to_string();
    for st in MEMBERS {
        toml.push_str(&format!(
            "\n[[members]]\nstate = \"{st}\"\npublic_key_file = \"keys/{st}.pub\"\n"
        ));
    }
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, toml).unwrap();
    let config = config.to_str().unwrap();
    let data = dir.join("data");
    let out = dir.join("export");
    let out_arg = out.to_str().unwrap();

    let coord = TestCoordinator::start(&data, &MEMBERS).await;
    let mut snaps = coord.client().await;
    let rus1 = snapshot(
        "RUS",
        1,
        SnapshotDigest::GENESIS,
        &items(&[("9K38", "A1", InService, None)]),
    );
    submit(&mut snaps, &rus1).await.expect("accepted");
    let busy = tally(&["export", "--config", config, "--out", out_arg]).await;
    assert!(!busy.status.success());
    assert_eq!(
        text(&busy.stderr),
        format!(
            "error: the data directory {} is in use by a running coordinator (the store is locked): stop the coordinator first, then export\n",
            data.display()
        )
    );
    coord.stop().await;

    let exported = tally(&["export", "--config", config, "--out", out_arg]).await;
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    assert_eq!(
        text(&exported.stdout),
        format!(
            "exported 1 snapshots (1 items), 0 equivocations, 0 seizure reports, 0 operator actions to {out_arg}\n"
        )
    );
    let restored = dir.join("restored");
    let imported = tally(&[
        "import",
        out_arg,
        "--data",
        restored.to_str().unwrap(),
        "--config",
        config,
    ])
    .await;
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert!(restored.join("db").is_file());

    let items_file = SnapshotFiles::new(state("RUS"), 1).items;
    let mut bytes = std::fs::read(out.join(&items_file)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(out.join(&items_file), &bytes).unwrap();
    let again = dir.join("again");
    let refused = tally(&["import", out_arg, "--data", again.to_str().unwrap()]).await;
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: import of {out_arg} refused; nothing was written: {items_file}: SHA-256 is "
        )),
        "{stderr}"
    );
    assert!(!again.exists());
}
