//! The README and the docs cannot rot: the README's hand-run session is run
//! as written (with the freshly built binary and free ports), and every
//! `tally` command line in the code blocks of README.md and of every page in
//! docs/ (docs/cli.md's examples, docs/deployment.md's audit and export
//! sessions, ...) parses with the real command-line parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use tally::cli::Cli;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// README.md, then every Markdown page of docs/ in name order: `(name, text)`.
fn documents() -> Vec<(String, String)> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    let mut documents = vec![("README.md".to_string(), readme())];
    for page in pages {
        let name = format!(
            "docs/{}",
            page.file_name().unwrap_or_default().to_string_lossy()
        );
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{name}: {e}"));
        documents.push((name, text));
    }
    documents
}

/// The fenced code blocks of a Markdown text, in order.
fn code_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push(line.to_string());
        }
    }
    blocks
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
fn the_session_by_hand_runs_as_written() {
    let text = readme();
    let block = code_blocks(&text)
        .into_iter()
        .find(|b| b.iter().any(|l| l.starts_with("T=target/release/tally")))
        .expect("README has the session by hand");
    let root = tempfile::tempdir().unwrap();
    crate::common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &root.path().join("config"),
    );
    // The README's lines, with the test's binary; the coordinator started in
    // the background is stopped when the script ends.
    let mut script = String::from("set -eu\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    for line in &block {
        if line.starts_with("T=") {
            script.push_str(&format!("T='{}'\n", env!("CARGO_BIN_EXE_tally")));
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    let port = free_port();
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root.path())
        // Free ports instead of the defaults, so tests can run side by side.
        .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("TALLY_COORDINATOR", format!("https://localhost:{port}"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README session failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("accepted: state RUS sequence 1"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("transport: TLS"), "{stdout}");
}

#[test]
fn every_tally_command_in_the_code_blocks_parses() {
    let mut checked = 0;
    for (name, text) in documents() {
        for line in code_blocks(&text).into_iter().flatten() {
            let line = line.split(" #").next().unwrap_or("").trim();
            let line = line.trim_end_matches('&').trim();
            let args: Vec<String> = if let Some(rest) = line.strip_prefix("$T ") {
                rest.split_whitespace().map(str::to_string).collect()
            } else if let Some(rest) = line.strip_prefix("tally ") {
                rest.split_whitespace().map(str::to_string).collect()
            } else if let Some(rest) = line.strip_prefix("cargo run --release -- ") {
                rest.split_whitespace().map(str::to_string).collect()
            } else {
                continue;
            };
            // Shell loops and variables are left to the session test.
            if args.iter().any(|a| a.contains('$')) {
                continue;
            }
            Cli::try_parse_from(std::iter::once("tally".to_string()).chain(args))
                .unwrap_or_else(|e| panic!("{name}: `{line}` does not parse: {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} command lines found");
}
