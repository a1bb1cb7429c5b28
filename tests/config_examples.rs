//! The commented example configurations in `config/` load as they are.

use std::path::Path;

use tally::state::MEMBER_STATES;
use tally::support::config::{CoordinatorConfig, NodeConfig, Transport};

#[test]
fn example_configs_load_with_generated_keys() {
    let root = tempfile::tempdir().unwrap();
    crate::common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &root.path().join("config"),
    );
    let keys = root.path().join("keys");
    tally::support::keys::write_key_pair(
        &keys,
        "coordinator",
        &tally::support::keys::generate().unwrap(),
    )
    .unwrap();
    for st in MEMBER_STATES {
        tally::support::keys::write_key_pair(&keys, st, &tally::support::keys::generate().unwrap())
            .unwrap();
    }

    let states: Vec<_> = MEMBER_STATES
        .iter()
        .map(|s| tally::state::StateCode::parse(s).unwrap())
        .collect();
    tally::support::certs::init(&root.path().join("certs"), &states, &[]).unwrap();

    let coord = CoordinatorConfig::load(&root.path().join("config/coordinator.toml")).unwrap();
    assert_eq!(coord.members.len(), 6);
    assert!(coord.key_file.ends_with("keys/coordinator.key"));
    // The example uses TLS with the PKI `tally certs init --out certs` makes.
    match &coord.transport {
        Transport::Tls(files) => {
            files
                .server_config()
                .expect("TLS files of the example load");
        }
        Transport::Insecure => panic!("the example configuration must use TLS"),
    }

    for st in MEMBER_STATES {
        let node = NodeConfig::load(&root.path().join(format!("config/nodes/{st}.toml"))).unwrap();
        assert_eq!(node.state.as_str(), st);
        assert!(node.coordinator_public_key.is_some());
        let member = coord
            .members
            .iter()
            .find(|m| m.state == node.state)
            .unwrap();
        let node_key = tally::support::keys::read_signing_key(&node.key_file).unwrap();
        assert_eq!(
            member.public_key,
            node_key.verifying_key(),
            "{st}: coordinator and node agree on the key"
        );
        assert_eq!(node.canonical, coord.canonical, "{st}: same canonical rule");
        let tls = node.tls.as_ref().expect("{st}: the example node uses TLS");
        assert!(
            tls.cert_file
                .as_ref()
                .unwrap()
                .ends_with(format!("certs/{st}.crt"))
        );
        tls.client_config().expect("node TLS files load");
        assert!(node.coordinator.starts_with("https://"));
    }
}

fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const COORDINATOR: &str = "insecure = true\ndata_dir = 'data'\nkey_file = 'k'\n\
listen = '127.0.0.1:7000'\n[limits]\nmax_items_per_snapshot = 10\n";

#[test]
fn environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "c.toml", COORDINATOR);

    let file_only = CoordinatorConfig::load_with_env(&p, &env_from(&[])).unwrap();
    assert_eq!(file_only.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(file_only.limits.max_items_per_snapshot, 10);
    assert_eq!(
        file_only.limits.max_message_bytes,
        4 * 1024 * 1024,
        "default"
    );
    assert_eq!(
        file_only.data_dir,
        dir.path().join("data"),
        "file paths: config dir"
    );

    let env = env_from(&[
        ("TALLY_LISTEN", "0.0.0.0:50051"),
        ("TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT", "20"),
        ("TALLY_LIMITS_MAX_MESSAGE_BYTES", "2097152"),
        ("TALLY_RECONCILE_TRANSFER_GRACE_HOURS", "1.5"),
        ("TALLY_CANONICAL_FOLD_LOOKALIKES", "false"),
        ("TALLY_DATA_DIR", "elsewhere/data"),
        // A node's key: ignored by the coordinator.
        ("TALLY_OUTBOX_DIR", "x"),
    ]);
    let cfg = CoordinatorConfig::load_with_env(&p, &env).unwrap();
    assert_eq!(cfg.listen.to_string(), "0.0.0.0:50051");
    assert_eq!(cfg.limits.max_items_per_snapshot, 20);
    assert_eq!(cfg.limits.max_message_bytes, 2_097_152);
    assert_eq!(cfg.reconcile.transfer_grace_hours, 1.5);
    assert!(!cfg.canonical.fold_lookalikes);
    assert_eq!(
        cfg.data_dir,
        Path::new("elsewhere/data"),
        "environment paths: current directory"
    );
    assert_eq!(cfg.key_file, dir.path().join("k"), "not overridden");

    let node = write(
        dir.path(),
        "n.toml",
        "insecure = true\nstate = 'KAZ'\nkey_file = 'k'\noutbox_dir = 'o'\n[retry]\nmax_attempts = 5\n",
    );
    let env = env_from(&[
        ("TALLY_COORDINATOR", "http://coordinator:50051"),
        ("TALLY_RETRY_MAX_ATTEMPTS", "0"),
        ("TALLY_WATCH_POLL_INTERVAL_MS", "250"),
        ("TALLY_KNOWN_STATES", "[\"RUS\", \"KAZ\"]"),
        ("TALLY_STATE", "KGZ"),
    ]);
    let cfg = NodeConfig::load_with_env(&node, &env).unwrap();
    assert_eq!(cfg.coordinator, "http://coordinator:50051");
    assert_eq!(cfg.retry.max_attempts, 0);
    assert_eq!(cfg.retry.initial_backoff_ms, 200, "default");
    assert_eq!(cfg.watch.poll_interval_ms, 250);
    assert_eq!(cfg.known_states.iter().count(), 2);
    assert_eq!(cfg.state.as_str(), "KGZ");
}

#[test]
fn validation_names_the_file_the_key_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = write(dir.path(), "coordinator.toml", COORDINATOR);
    let node = write(
        dir.path(),
        "node.toml",
        "insecure = true\nstate = 'KAZ'\nkey_file = 'k'\noutbox_dir = 'o'\n",
    );
    // (base file, text added to it, environment, expected part of the message)
    type Case<'a> = (&'a Path, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (
            &coordinator,
            "[limits]\nmax_items_per_snapshot = 0\n",
            &[],
            "c1.toml: limits.max_items_per_snapshot: must be at least 1",
        ),
        (
            &coordinator,
            "",
            &[("TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT", "0")],
            "limits.max_items_per_snapshot (from TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT): must be at least 1",
        ),
        (
            &coordinator,
            "",
            &[("TALLY_LISTEN", "localhost")],
            "invalid socket address syntax in `listen` (environment overrides: TALLY_LISTEN)",
        ),
        (
            &coordinator,
            "",
            &[("TALLY_LIMITS_MAX_MESSAGE_BYTES", "lots")],
            "expected usize in `limits.max_message_bytes`",
        ),
        (
            &coordinator,
            "",
            &[("TALLY_LIMITS_MAX_MESSAGE_BYTES", "65536")],
            "limits.max_message_bytes (from TALLY_LIMITS_MAX_MESSAGE_BYTES): must be at least 1114112",
        ),
        (
            &coordinator,
            "[reconcile]\ntick_seconds = 0\n",
            &[],
            "reconcile.tick_seconds: must be at least 1",
        ),
        (
            &coordinator,
            "[limits]\nmax_items = 3\n",
            &[],
            "unknown field `max_items`, expected one of `max_items_per_snapshot`",
        ),
        (
            &node,
            "",
            &[("TALLY_COORDINATOR", "coordinator:50051")],
            "coordinator (from TALLY_COORDINATOR): 'coordinator:50051' must start with http://",
        ),
        (
            &node,
            "[retry]\ninitial_backoff_ms = 500\nmax_backoff_ms = 100\n",
            &[],
            "retry.max_backoff_ms: must be at least retry.initial_backoff_ms (500)",
        ),
        (
            &node,
            "[watch]\npoll_interval_ms = 0\n",
            &[],
            "watch.poll_interval_ms: must be at least 10",
        ),
        (
            &node,
            "[watch]\npoll_ms = 100\n",
            &[],
            "unknown field `poll_ms`",
        ),
    ];
    for (i, (base, extra, env, expected)) in cases.iter().enumerate() {
        // Each case is the base file plus more keys (or sections) at its end.
        let mut text = std::fs::read_to_string(base).unwrap();
        if extra.starts_with("[limits]") {
            text = text.replace("[limits]\nmax_items_per_snapshot = 10\n", "");
        }
        text.push_str(extra);
        let name = format!("c{}.toml", i + 1);
        let path = write(dir.path(), &name, &text);
        let msg = if *base == coordinator.as_path() {
            CoordinatorConfig::load_with_env(&path, &env_from(env))
                .err()
                .map(|e| e.to_string())
        } else {
            NodeConfig::load_with_env(&path, &env_from(env))
                .err()
                .map(|e| e.to_string())
        };
        let msg = msg.unwrap_or_else(|| panic!("case {}: accepted", i + 1));
        assert!(
            msg.starts_with(&path.display().to_string()) && msg.contains(expected),
            "case {}: {msg}\nexpected: {expected}",
            i + 1
        );
    }
}

/// Every key has an environment variable; every key is in the commented
/// example files, and every key with its variable in a row of the tables of
/// docs/configuration.md (the configuration reference).
#[test]
fn every_key_is_documented_with_its_environment_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let rows: Vec<&str> = reference.lines().filter(|l| l.starts_with("| `")).collect();
    let (coordinator, node) = tally::support::config::env_keys();
    let examples = [
        (coordinator, root.join("config/coordinator.toml")),
        (node, root.join("config/nodes/RUS.toml")),
    ];
    for (keys, example) in examples {
        let text = std::fs::read_to_string(&example).unwrap();
        let mut vars = std::collections::BTreeSet::new();
        for (key, var) in keys {
            assert!(vars.insert(var.clone()), "{var} names two keys");
            let (section, name) = key.split_once('.').unwrap_or(("", &key));
            if !section.is_empty() {
                assert!(
                    text.contains(&format!("[{section}]")),
                    "{}: no [{section}]",
                    example.display()
                );
            }
            let documented = text.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{name} ="))
            });
            assert!(documented, "{}: {key} is not documented", example.display());
            assert!(
                rows.iter()
                    .any(|row| row.contains(&format!("`{key}`"))
                        && row.contains(&format!("`{var}`"))),
                "docs/configuration.md has no table row with `{key}` and `{var}`"
            );
        }
    }
}
