//! The commented example configurations in `config/` load as they are.

use std::path::Path;

use tally::config::{CoordinatorConfig, NodeConfig, Transport};
use tally::state::MEMBER_STATES;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn example_configs_load_with_generated_keys() {
    let root = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &root.path().join("config"),
    );
    let keys = root.path().join("keys");
    tally::keys::write_key_pair(&keys, "coordinator", &tally::keys::generate().unwrap()).unwrap();
    for st in MEMBER_STATES {
        tally::keys::write_key_pair(&keys, st, &tally::keys::generate().unwrap()).unwrap();
    }

    let states: Vec<_> = MEMBER_STATES
        .iter()
        .map(|s| tally::state::StateCode::parse(s).unwrap())
        .collect();
    tally::certs::init(&root.path().join("certs"), &states, &[]).unwrap();

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
        let node_key = tally::keys::read_signing_key(&node.key_file).unwrap();
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
