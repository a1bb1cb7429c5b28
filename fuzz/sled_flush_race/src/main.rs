//! Threads that write to one sled database and flush it, as the coordinator
//! does on every commit, for a number of seconds:
//!
//! ```text
//! cd fuzz/sled_flush_race
//! RUSTFLAGS=-Zsanitizer=address cargo +nightly run --release \
//!     --target x86_64-unknown-linux-gnu -- unpinned|pinned [THREADS] [SECONDS] [cycles]
//! ```
//!
//! With `cycles`, each round opens a fresh database (default settings, as
//! the coordinator), lets the threads write and flush a little, and drops
//! it, as the `submit_sequence` fuzz target does once per input.
//!
//! sled 0.34.7's `Tree::flush` reads the current IO buffer through a raw
//! pointer without pinning an epoch (`iobuf::make_stable_inner` via
//! `current_iobuf`), while another thread may seal that buffer, swap in the
//! next one and retire the old one for epoch-based reclamation. An unpinned
//! reader does not hold reclamation back, so the buffer can be freed before
//! the reader takes its reference: a use-after-free, which AddressSanitizer
//! reports and aborts on. `pinned` holds an epoch guard (`sled::pin()`)
//! across every flush, as Tally does (`tally::coordinator::storage::flush`); then the
//! retired buffer outlives the read.

// Calls sled's flush directly on purpose (Tally's clippy.toml forbids it).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pinned = match args.first().map(String::as_str) {
        Some("pinned") => true,
        Some("unpinned") => false,
        _ => {
            eprintln!("usage: sled-flush-race unpinned|pinned [THREADS] [SECONDS]");
            std::process::exit(2);
        }
    };
    let threads: usize = args.get(1).map_or(4, |s| s.parse().expect("THREADS"));
    let seconds: u64 = args.get(2).map_or(60, |s| s.parse().expect("SECONDS"));

    let cycles = args.get(3).is_some_and(|s| s == "cycles");
    if cycles {
        cycle_databases(pinned, threads, seconds);
        return;
    }
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let db = sled::Config::new()
        .path(base.path())
        .flush_every_ms(Some(1))
        .open()
        .expect("open sled");
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let db = db.clone();
            let stop = stop.clone();
            let flushes = flushes.clone();
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = [t as u8, (n >> 8) as u8, n as u8];
                    db.insert(key, vec![0u8; 64 + (n % 512) as usize])
                        .expect("insert");
                    if pinned {
                        let _epoch = sled::pin();
                        db.flush().expect("flush");
                    } else {
                        db.flush().expect("flush");
                    }
                    flushes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    println!(
        "{} flushes by {threads} threads in {:.1} s ({}), no fault",
        flushes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        if pinned { "pinned" } else { "unpinned" }
    );
}

fn scratch() -> tempfile::TempDir {
    if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory")
}

fn flush(db: &sled::Db, pinned: bool) {
    if pinned {
        let _epoch = sled::pin();
        db.flush().expect("flush");
    } else {
        db.flush().expect("flush");
    }
}

fn cycle_databases(pinned: bool, threads: usize, seconds: u64) {
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        rounds += 1;
        let dir = scratch();
        let db = sled::Config::new().path(dir.path()).open().expect("open sled");
        flush(&db, pinned);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for n in 0..20u8 {
                        db.insert([t as u8, n], vec![n; 100]).expect("insert");
                        flush(&db, pinned);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
        drop(db);
    }
    println!(
        "{rounds} databases opened, written and dropped by {threads} threads in {:.1} s ({}), no fault",
        started.elapsed().as_secs_f64(),
        if pinned { "pinned" } else { "unpinned" }
    );
}
