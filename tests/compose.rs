//! docker-compose.yml, checked without a Docker engine: every service's
//! file system is rebuilt in a temporary directory from its mounts (named
//! volumes shared between services, bind mounts copied from the repository),
//! the one-shot key service's `tally keygen` lines are run there, and each
//! service's command, environment and configuration are loaded with the real
//! CLI parser and configuration loader, as the container would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_yaml_ng::Value;
use tally::cli::{Cli, Command, NodeCommand};
use tally::state::MEMBER_STATES;
use tally::support::config::{CoordinatorConfig, NodeConfig};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Mount {
    source: String,
    target: String,
}

impl Mount {
    fn is_bind(&self) -> bool {
        self.source.starts_with("./")
    }
}

struct Service {
    name: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    mounts: Vec<Mount>,
    healthcheck: Vec<String>,
    ports: Vec<String>,
}

#[track_caller]
fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn parse_compose() -> (BTreeMap<String, Service>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut services = BTreeMap::new();
    for (name, s) in doc["services"].as_mapping().expect("services") {
        let name = name.as_str().unwrap().to_string();
        let env = s["environment"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap().to_string(),
                            v.as_str()
                                .expect("environment values are strings")
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mounts = strings(&s["volumes"])
            .into_iter()
            .map(|m| {
                let parts: Vec<&str> = m.split(':').collect();
                assert!(matches!(parts.len(), 2 | 3), "{name}: volume '{m}'");
                Mount {
                    source: parts[0].to_string(),
                    target: parts[1].to_string(),
                }
            })
            .collect();
        let service = Service {
            command: strings(&s["command"]),
            env,
            mounts,
            healthcheck: strings(&s["healthcheck"]["test"]),
            ports: strings(&s["ports"]),
            name: name.clone(),
        };
        services.insert(name, service);
    }
    let volumes = doc["volumes"]
        .as_mapping()
        .expect("named volumes")
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (services, volumes)
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// A service's file system in the sandbox: named volumes are symlinks to one
/// shared directory per volume; bind mounts are copies of the repository's
/// files, so `..` from a mounted config file leads where it would in the
/// container.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn build(base: &Path, volumes_dir: &Path, service: &Service) -> Sandbox {
        let root = base.join(&service.name);
        std::fs::create_dir_all(&root).unwrap();
        for m in &service.mounts {
            let target = root.join(m.target.trim_start_matches('/'));
            if m.is_bind() {
                let source = repo().join(&m.source);
                if m.source.starts_with("./exports/") {
                    // The operator creates the drop folders; so does compose.
                    std::fs::create_dir_all(&target).unwrap();
                } else {
                    assert!(source.exists(), "{}: {} is missing", service.name, m.source);
                    copy_tree(&source, &target);
                }
            } else {
                let volume = volumes_dir.join(&m.source);
                std::fs::create_dir_all(&volume).unwrap();
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                #[cfg(unix)]
                std::os::unix::fs::symlink(&volume, &target).unwrap();
            }
        }
        Sandbox { root }
    }

    /// A container path as a sandbox path.
    fn path(&self, container: &Path) -> PathBuf {
        match container.strip_prefix("/") {
            Ok(rel) => self.root.join(rel),
            Err(_) => container.to_path_buf(),
        }
    }

    /// The service's environment, with absolute paths moved into the sandbox.
    fn env(&self, service: &Service) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = service
            .env
            .iter()
            .map(|(k, v)| {
                let v = if v.starts_with('/') {
                    self.path(Path::new(v)).display().to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        move |name| vars.get(name).cloned()
    }

    /// Names of the private key files the service can see.
    fn private_keys(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if std::fs::metadata(&path).unwrap().is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "key") {
                    out.insert(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root, &mut out);
        out
    }
}

fn parse_cli(command: &[String]) -> Cli {
    Cli::try_parse_from(std::iter::once("tally".to_string()).chain(command.iter().cloned()))
        .unwrap_or_else(|e| panic!("`tally {}` does not parse: {e}", command.join(" ")))
}

/// The port of an `http://host:port` address.
fn url_port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Checks a health check runs `tally health` against `host` and returns its port.
#[track_caller]
fn health_port(service: &Service, host: &str) -> u16 {
    assert_eq!(service.healthcheck[0], "CMD", "{}", service.name);
    assert_eq!(service.healthcheck[1], "tally", "{}", service.name);
    let cli = parse_cli(&service.healthcheck[2..]);
    let Command::Health(args) = cli.command else {
        panic!("{}: the health check is not `tally health`", service.name);
    };
    assert!(
        args.coordinator.starts_with(&format!("https://{host}:")),
        "{}: {}",
        service.name,
        args.coordinator
    );
    url_port(&args.coordinator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_matches_the_configuration() {
    let (services, declared_volumes) = parse_compose();
    let node_services: Vec<String> = MEMBER_STATES
        .iter()
        .map(|s| format!("node-{}", s.to_lowercase()))
        .collect();
    let mut expected: BTreeSet<String> = node_services.iter().cloned().collect();
    expected.insert("keys".into());
    expected.insert("coordinator".into());
    assert_eq!(services.keys().cloned().collect::<BTreeSet<_>>(), expected);

    // Every named volume used is declared, and every declared one is used.
    let used: BTreeSet<String> = services
        .values()
        .flat_map(|s| s.mounts.iter().filter(|m| !m.is_bind()))
        .map(|m| m.source.clone())
        .collect();
    assert_eq!(used, declared_volumes);

    let base = tempfile::tempdir().unwrap();
    let volumes = base.path().join("volumes");
    let boxes: BTreeMap<&str, Sandbox> = services
        .values()
        .map(|s| {
            (
                s.name.as_str(),
                Sandbox::build(&base.path().join("services"), &volumes, s),
            )
        })
        .collect();

    // The key service: run its `tally keygen` lines in its sandbox, twice
    // (compose runs it on every `up`; existing keys must be kept).
    let keys_service = &services["keys"];
    let script = keys_service.command.last().expect("key script");
    let keygen_lines: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tally keygen"))
        .collect();
    assert_eq!(keygen_lines.len(), 1 + MEMBER_STATES.len());
    for round in 0..2 {
        for line in &keygen_lines {
            let words: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
            let mut cli = parse_cli(&words);
            let Command::Keygen(args) = &mut cli.command else {
                unreachable!()
            };
            assert!(args.keep_existing, "{line}: needs --keep-existing");
            args.out = boxes["keys"].path(&args.out);
            args.public_out = args.public_out.as_ref().map(|p| boxes["keys"].path(p));
            tally::cli::run(cli)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {line}: {e:#}"));
        }
    }

    // The coordinator.
    let coordinator = &services["coordinator"];
    let coord_box = &boxes["coordinator"];
    let Command::Coordinator { config } = parse_cli(&coordinator.command).command else {
        panic!("the coordinator service does not run `tally coordinator`");
    };
    let coord_cfg =
        CoordinatorConfig::load_with_env(&coord_box.path(&config), &coord_box.env(coordinator))
            .unwrap_or_else(|e| panic!("coordinator: {e}"));
    let port = coord_cfg.listen.port();
    assert!(
        coord_cfg.listen.ip().is_unspecified(),
        "listens on all interfaces of its network"
    );
    assert_eq!(coordinator.ports.len(), 1);
    assert_eq!(
        coordinator.ports[0].rsplit(':').next().unwrap(),
        port.to_string(),
        "published port"
    );
    assert_eq!(health_port(coordinator, "localhost"), port);
    let coordinator_key = tally::support::keys::read_signing_key(&coord_cfg.key_file).unwrap();
    assert_eq!(
        coord_box.private_keys(),
        BTreeSet::from(["coordinator.key".to_string()]),
        "the coordinator sees no member's private key"
    );
    assert!(
        coord_cfg
            .data_dir
            .starts_with(coord_box.path(Path::new("/data")))
    );
    assert_eq!(coord_cfg.members.len(), MEMBER_STATES.len());

    // The nodes.
    for (st, name) in MEMBER_STATES.iter().zip(&node_services) {
        let node = &services[name];
        let node_box = &boxes[name.as_str()];
        let Command::Node(NodeCommand::Watch { config, dir }) = parse_cli(&node.command).command
        else {
            panic!("{name} does not run `tally node watch`");
        };
        let drop_mount = node
            .mounts
            .iter()
            .find(|m| Path::new(&m.target) == dir)
            .unwrap_or_else(|| panic!("{name}: the drop folder is not mounted"));
        assert_eq!(drop_mount.source, format!("./exports/{st}"));
        let cfg = NodeConfig::load_with_env(&node_box.path(&config), &node_box.env(node))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg.state.as_str(), *st);
        assert_eq!(cfg.coordinator, format!("https://coordinator:{port}"));
        let tls = cfg.tls.as_ref().unwrap_or_else(|| panic!("{name}: no TLS"));
        assert!(
            tls.cert_file
                .as_ref()
                .unwrap()
                .ends_with(format!("{st}.crt"))
                && tls
                    .key_file
                    .as_ref()
                    .unwrap()
                    .ends_with(format!("{st}-tls.key")),
            "{name}: {tls:?}"
        );
        assert_eq!(health_port(node, "coordinator"), port);
        assert_eq!(
            node_box.private_keys(),
            BTreeSet::from([format!("{st}.key")]),
            "{name} sees its own private key and no other"
        );
        let key = tally::support::keys::read_signing_key(&cfg.key_file).unwrap();
        let member = coord_cfg
            .members
            .iter()
            .find(|m| m.state == cfg.state)
            .unwrap_or_else(|| panic!("{st} is not a member"));
        assert_eq!(member.public_key, key.verifying_key(), "{st}: keys agree");
        assert_eq!(
            cfg.coordinator_public_key,
            Some(coordinator_key.verifying_key()),
            "{st}: receipts are checked against the coordinator's key"
        );
        // The outbox lives in the node's own named volume.
        let outbox_mount = node
            .mounts
            .iter()
            .find(|m| {
                cfg.outbox_dir
                    .starts_with(node_box.path(Path::new(&m.target)))
            })
            .unwrap_or_else(|| panic!("{name}: the outbox is not on a volume"));
        assert_eq!(outbox_mount.source, format!("outbox-{}", st.to_lowercase()));
        assert_eq!(
            node.env.get("TALLY_COORDINATOR").map(|u| url_port(u)),
            Some(port)
        );
    }
}

#[test]
fn dockerfile_builds_tally_in_a_rust_stage_and_runs_it_on_debian_slim() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:") && froms[1].contains("-slim"));
    assert!(text.contains("cargo build --release --locked --bin tally"));
    assert!(text.contains("COPY --from=build /usr/local/bin/tally /usr/local/bin/tally"));
    // Every workspace member (and the protos the wire crate compiles) is
    // copied into the build stage, or the image does not build.
    let copied: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| l.split_whitespace().rev().skip(1))
        .collect();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    assert!(members.len() >= 3, "{members:?}");
    let mut needed: Vec<String> = vec!["Cargo.toml".into(), "Cargo.lock".into(), "proto".into()];
    needed.extend(["src", "benches", "tests"].map(String::from));
    for m in members {
        let m = m.as_str().unwrap();
        if m != "." {
            needed.push(m.to_string());
        }
    }
    for path in &needed {
        assert!(
            copied
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{}/", c.trim_end_matches('/')))),
            "the Dockerfile's build stage does not copy {path} (copied: {copied:?})"
        );
    }
    // Every key volume mount point of the key service exists in the image, so
    // that Docker gives the volume to the unprivileged user.
    let (services, _) = parse_compose();
    for m in &services["keys"].mounts {
        assert!(text.contains(&m.target), "the image lacks {}", m.target);
    }
}
