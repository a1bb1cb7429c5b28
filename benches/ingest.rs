//! Signed-snapshot throughput, node side and coordinator side.
//!
//! Run: `cargo bench --bench ingest` (items: TALLY_BENCH_ITEMS, default
//! 1,000,000; runs: TALLY_BENCH_RUNS, default 3). Prints the median of each
//! phase. The coordinator runs in-process on 127.0.0.1 with a sled store in a
//! temporary directory; the client is a real tonic client over loopback.

use std::time::{Duration, Instant};

use tally::coordinator::storage::Storage;
use tally::inventory_csv::{ExportOptions, read_export};
use tally::proto::{self, snapshots_client::SnapshotsClient, submit_request};
use tally::serial::CanonicalRule;
use tally::snapshot::{ItemStreamVerifier, SnapshotDigest, build_snapshot, sort_items};
use tally::state::{StateCode, StateSet};
use tally_wire::convert::signed_header_to_proto;

/// The same allocator as the `tally` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>10.0} items/s", n as f64 / d.as_secs_f64())
}

fn main() {
    let n = env_usize("TALLY_BENCH_ITEMS", 1_000_000);
    let runs = env_usize("TALLY_BENCH_RUNS", 3);
    let state = StateCode::parse("KAZ").expect("state");
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let rule = CanonicalRule::default();
    let known = StateSet::members();
    let csv = tally::dev::generate::inventory_csv(state, n, 7);
    println!(
        "tally ingest benchmark: {n} items, {} MB CSV, median of {runs} runs",
        csv.len() / 1_000_000
    );

    // Node: parse + validate + canonicalise, sort, encode + Merkle root, sign.
    let (mut t_parse, mut t_sort, mut t_build, mut t_sign) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let opts = ExportOptions {
            rule: &rule,
            known_states: &known,
            max_problems: 100,
        };
        let mut items = read_export("bench.csv", csv.as_bytes(), &opts).expect("export parses");
        t_parse.push(t.elapsed());
        let t = Instant::now();
        sort_items(&mut items);
        t_sort.push(t.elapsed());
        let t = Instant::now();
        let unsigned = build_snapshot(state, 1, 0, SnapshotDigest::GENESIS, &items);
        t_build.push(t.elapsed());
        let t = Instant::now();
        let signed = unsigned.header.sign(&key);
        t_sign.push(t.elapsed());
        last = Some((signed, unsigned.chunks));
    }
    let (signed, chunks) = last.expect("at least one run");
    let node_total = median(t_parse.clone())
        + median(t_sort.clone())
        + median(t_build.clone())
        + median(t_sign.clone());
    println!(
        "node   parse+validate  {:>8.1?}  {}",
        median(t_parse.clone()),
        rate(n, median(t_parse))
    );
    println!("node   sort            {:>8.1?}", median(t_sort));
    println!("node   leaves+root     {:>8.1?}", median(t_build));
    println!("node   sign            {:>8.1?}", median(t_sign));
    println!(
        "node   TOTAL           {:>8.1?}  {}",
        node_total,
        rate(n, node_total)
    );

    // Coordinator, in isolation: verification alone, then storage alone.
    let mut t_verify = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        let mut v = ItemStreamVerifier::new(&signed.header, rule.clone());
        for c in &chunks {
            v.push_chunk(c).expect("verifies");
        }
        v.finish().expect("root matches");
        t_verify.push(t.elapsed());
    }
    println!(
        "coord  verify (no I/O) {:>8.1?}  {}",
        median(t_verify.clone()),
        rate(n, median(t_verify))
    );

    // Coordinator end to end over loopback: verify + durable store + receipt.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut t_e2e = vec![];
    let mut disk = 0;
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let elapsed = runtime.block_on(async {
            let coordinator = tally::coordinator::server::assemble(
                Storage::open_sled(dir.path()).expect("store"),
                [(state, key.verifying_key())],
                ed25519_dalek::SigningKey::from_bytes(&[2; 32]),
                Default::default(),
                rule.clone(),
                Default::default(),
                std::time::Duration::from_secs(3600),
            )
            .expect("coordinator");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(tally::coordinator::server::serve(
                coordinator,
                listener,
                async {
                    let _ = stopped.await;
                },
            ));
            let mut client = SnapshotsClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
            let mut msgs = vec![proto::SubmitRequest {
                part: Some(submit_request::Part::Header(signed_header_to_proto(
                    &signed,
                ))),
            }];
            msgs.extend(chunks.iter().map(|c| proto::SubmitRequest {
                part: Some(submit_request::Part::Chunk(proto::ItemChunk {
                    leaves: bytes::Bytes::from(c.clone()),
                })),
            }));
            let t = Instant::now();
            client
                .submit(tokio_stream::iter(msgs))
                .await
                .expect("accepted");
            let elapsed = t.elapsed();
            let _ = stop.send(());
            let _ = server.await;
            elapsed
        });
        disk = dir_size(dir.path());
        t_e2e.push(elapsed);
    }
    println!(
        "coord  submit e2e      {:>8.1?}  {}   (gRPC loopback, verify, sled, flush, receipt; {} MB on disk)",
        median(t_e2e.clone()),
        rate(n, median(t_e2e)),
        disk / 1_000_000
    );
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
