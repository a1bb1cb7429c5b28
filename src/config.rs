//! TOML configuration for the coordinator and for member nodes.
//!
//! Unknown keys and bad values are rejected when the file is loaded, with the
//! file name and the offending key in the message. Relative paths inside a
//! file are resolved against the directory that contains it, so a config
//! directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::access::{Person, Role, TokenDigest};
use crate::keys;
use crate::serial::CanonicalRule;
use crate::state::{StateCode, StateSet};
use crate::tls::{ClientTlsFiles, ServerTlsFiles};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: keys::KeyError,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| invalid(path, e.to_string().trim_end()))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Limits the coordinator enforces on submissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest snapshot accepted, in items.
    pub max_items_per_snapshot: u64,
    /// Largest gRPC message decoded, in bytes (one chunk of leaves).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items_per_snapshot: 20_000_000,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One member state as the coordinator knows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    state: StateCode,
    public_key: Option<String>,
    public_key_file: Option<PathBuf>,
    /// Expected time between snapshots; absent: never overdue.
    cadence_hours: Option<f64>,
}

/// Settings of the reconciliation rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Hours after a transfer's declaring snapshot (as-of time) before
    /// `transfer_not_received` opens. 0 alerts at once.
    pub transfer_grace_hours: f64,
    /// How often the clock-based rules are re-evaluated, in seconds.
    pub tick_seconds: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            transfer_grace_hours: 168.0,
            tick_seconds: 60,
        }
    }
}

fn hours_to_ms(hours: f64) -> i64 {
    (hours * 3_600_000.0).round() as i64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinatorConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    data_dir: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    canonical: CanonicalRule,
    #[serde(default)]
    reconcile: ReconcileSettings,
    #[serde(default)]
    members: Vec<RawMember>,
    /// Plaintext gRPC, for development only.
    #[serde(default)]
    insecure: bool,
    tls: Option<ServerTlsFiles>,
    #[serde(default)]
    operators: Vec<RawOperator>,
}

/// One operator or auditor: the SHA-256 of their bearer token, never the
/// token itself (`tally token new` prints both).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    name: String,
    role: Role,
    token_sha256: String,
}

/// How the coordinator's listener is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TLS; member nodes authenticate with client certificates.
    Tls(ServerTlsFiles),
    /// Plaintext (`insecure = true`): development only, logged as a warning.
    Insecure,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

/// A member state with its verified public key.
#[derive(Debug, Clone)]
pub struct Member {
    pub state: StateCode,
    pub public_key: VerifyingKey,
    /// Expected time between snapshots, in milliseconds.
    pub cadence_ms: Option<i64>,
}

/// The coordinator's validated configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub limits: Limits,
    pub canonical: CanonicalRule,
    pub reconcile: ReconcileSettings,
    pub members: Vec<Member>,
    pub transport: Transport,
    /// Operators and auditors, by token digest.
    pub operators: Vec<(TokenDigest, Person)>,
}

impl CoordinatorConfig {
    /// The engine settings this configuration asks for.
    pub fn engine_config(&self) -> crate::reconcile::EngineConfig {
        crate::reconcile::EngineConfig {
            transfer_grace_ms: hours_to_ms(self.reconcile.transfer_grace_hours),
            cadence_ms: self
                .members
                .iter()
                .filter_map(|m| m.cadence_ms.map(|c| (m.state, c)))
                .collect(),
        }
    }

    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let raw: RawCoordinatorConfig = parse_toml(path)?;
        let base = base_dir(path);
        let mut members: Vec<Member> = Vec::new();
        for (i, m) in raw.members.iter().enumerate() {
            if members.iter().any(|x| x.state == m.state) {
                return Err(invalid(
                    path,
                    format!("members[{i}]: state {} is listed twice", m.state),
                ));
            }
            let public_key = match (&m.public_key, &m.public_key_file) {
                (Some(hex_key), None) => {
                    let bytes: [u8; 32] = hex::decode(hex_key.trim())
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            invalid(
                                path,
                                format!("members[{i}].public_key: expected 64 hex digits"),
                            )
                        })?;
                    keys::parse_verifying_key(&bytes).ok_or_else(|| {
                        invalid(
                            path,
                            format!("members[{i}].public_key: not a valid Ed25519 key"),
                        )
                    })?
                }
                (None, Some(file)) => {
                    keys::read_verifying_key(&resolve(&base, file)).map_err(|source| {
                        ConfigError::Key {
                            path: path.to_path_buf(),
                            source,
                        }
                    })?
                }
                _ => {
                    return Err(invalid(
                        path,
                        format!(
                            "members[{i}] ({}): set exactly one of public_key or public_key_file",
                            m.state
                        ),
                    ));
                }
            };
            let cadence_ms = match m.cadence_hours {
                Some(h) if !(h.is_finite() && h > 0.0) => {
                    return Err(invalid(
                        path,
                        format!("members[{i}].cadence_hours: must be a positive number of hours"),
                    ));
                }
                h => h.map(hours_to_ms),
            };
            members.push(Member {
                state: m.state,
                public_key,
                cadence_ms,
            });
        }
        raw.canonical
            .check()
            .map_err(|e| invalid(path, format!("canonical.remove_chars: {e}")))?;
        if members.len() > crate::reconcile::MAX_STATES {
            return Err(invalid(
                path,
                format!(
                    "members: at most {} states are supported",
                    crate::reconcile::MAX_STATES
                ),
            ));
        }
        if raw.limits.max_message_bytes < 64 * 1024 {
            return Err(invalid(
                path,
                "limits.max_message_bytes: must be at least 65536",
            ));
        }
        if !(raw.reconcile.transfer_grace_hours.is_finite()
            && raw.reconcile.transfer_grace_hours >= 0.0)
        {
            return Err(invalid(
                path,
                "reconcile.transfer_grace_hours: must be 0 or more",
            ));
        }
        if raw.reconcile.tick_seconds == 0 {
            return Err(invalid(path, "reconcile.tick_seconds: must be at least 1"));
        }
        if raw.limits.max_items_per_snapshot == 0 {
            return Err(invalid(
                path,
                "limits.max_items_per_snapshot: must be at least 1",
            ));
        }
        let transport = match (raw.insecure, raw.tls) {
            (false, Some(mut files)) => {
                files.resolve_against(&base);
                Transport::Tls(files)
            }
            (true, None) => Transport::Insecure,
            (true, Some(_)) => {
                return Err(invalid(
                    path,
                    "insecure = true and a [tls] section: choose one (remove insecure for TLS)",
                ));
            }
            (false, None) => {
                return Err(invalid(
                    path,
                    "[tls] is missing: set cert_file, key_file and client_ca_file \
                     (`tally certs init --out certs` makes a demo PKI), or set \
                     insecure = true for plaintext on a development machine",
                ));
            }
        };
        let mut operators: Vec<(TokenDigest, Person)> = Vec::new();
        for (i, o) in raw.operators.into_iter().enumerate() {
            let digest = TokenDigest::parse_hex(&o.token_sha256).ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "operators[{i}].token_sha256: expected 64 hex digits (the SHA-256 \
                         `tally token new` prints), not the token itself"
                    ),
                )
            })?;
            if o.name.trim().is_empty() {
                return Err(invalid(
                    path,
                    format!("operators[{i}].name: must not be empty"),
                ));
            }
            if operators.iter().any(|(d, _)| *d == digest) {
                return Err(invalid(
                    path,
                    format!(
                        "operators[{i}] ({}): the same token is listed twice",
                        o.name
                    ),
                ));
            }
            operators.push((
                digest,
                Person {
                    name: o.name,
                    role: o.role,
                },
            ));
        }
        Ok(CoordinatorConfig {
            listen: raw.listen,
            data_dir: resolve(&base, &raw.data_dir),
            key_file: resolve(&base, &raw.key_file),
            limits: raw.limits,
            canonical: raw.canonical,
            reconcile: raw.reconcile,
            members,
            transport,
            operators,
        })
    }
}

/// How a node retries while the coordinator is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Attempts before giving up; 0 retries forever.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            max_attempts: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeConfig {
    state: StateCode,
    key_file: PathBuf,
    #[serde(default = "default_coordinator")]
    coordinator: String,
    outbox_dir: PathBuf,
    coordinator_public_key_file: Option<PathBuf>,
    known_states: Option<Vec<StateCode>>,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    canonical: CanonicalRule,
    /// Plaintext gRPC, for development only.
    #[serde(default)]
    insecure: bool,
    tls: Option<ClientTlsFiles>,
}

fn default_coordinator() -> String {
    "http://127.0.0.1:50051".to_string()
}

/// A member node's validated configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub state: StateCode,
    pub key_file: PathBuf,
    pub coordinator: String,
    pub outbox_dir: PathBuf,
    pub coordinator_public_key: Option<VerifyingKey>,
    pub known_states: StateSet,
    pub retry: RetryPolicy,
    pub canonical: CanonicalRule,
    /// TLS towards the coordinator; `None` only with `insecure = true`.
    pub tls: Option<ClientTlsFiles>,
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let raw: RawNodeConfig = parse_toml(path)?;
        let base = base_dir(path);
        if !(raw.coordinator.starts_with("http://") || raw.coordinator.starts_with("https://")) {
            return Err(invalid(
                path,
                format!(
                    "coordinator: '{}' must start with http:// or https://",
                    raw.coordinator
                ),
            ));
        }
        raw.canonical
            .check()
            .map_err(|e| invalid(path, format!("canonical.remove_chars: {e}")))?;
        let https = raw.coordinator.starts_with("https://");
        let tls = match (raw.insecure, raw.tls) {
            (false, Some(mut files)) if https => {
                if files.cert_file.is_none() || files.key_file.is_none() {
                    return Err(invalid(
                        path,
                        "[tls]: cert_file and key_file (this state's client certificate) are required",
                    ));
                }
                files.resolve_against(&base);
                Some(files)
            }
            (false, Some(_)) => {
                return Err(invalid(
                    path,
                    format!(
                        "coordinator: '{}' must start with https:// when [tls] is set",
                        raw.coordinator
                    ),
                ));
            }
            (true, None) if !https => None,
            (true, _) => {
                return Err(invalid(
                    path,
                    "insecure = true needs an http:// coordinator address and no [tls] section",
                ));
            }
            (false, None) => {
                return Err(invalid(
                    path,
                    "[tls] is missing: set ca_file, cert_file and key_file (`tally certs init` \
                     makes a demo PKI), or set insecure = true for plaintext on a development machine",
                ));
            }
        };
        let coordinator_public_key = raw
            .coordinator_public_key_file
            .map(|f| keys::read_verifying_key(&resolve(&base, &f)))
            .transpose()
            .map_err(|source| ConfigError::Key {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(NodeConfig {
            state: raw.state,
            key_file: resolve(&base, &raw.key_file),
            coordinator: raw.coordinator,
            outbox_dir: resolve(&base, &raw.outbox_dir),
            coordinator_public_key,
            known_states: raw
                .known_states
                .map_or_else(StateSet::members, |v| v.into_iter().collect()),
            retry: raw.retry,
            canonical: raw.canonical,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\nlisten_adress = '1.2.3.4:5'\n",
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("c.toml") && msg.contains("listen_adress"),
            "{msg}"
        );
    }

    #[test]
    fn bad_state_code_and_missing_key_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[[members]]\nstate = 'rus'\npublic_key = 'aa'\n",
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("'rus' is not a state code"), "{msg}");

        let p = write(
            dir.path(),
            "c2.toml",
            "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[[members]]\nstate = 'RUS'\n",
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("members[0] (RUS): set exactly one of public_key"),
            "{msg}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        keys::write_key_pair(&dir.path().join("keys"), "RUS", &key).unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "insecure = true\ndata_dir = 'data'\nkey_file = 'keys/coordinator.key'\n[[members]]\nstate = 'RUS'\npublic_key_file = 'keys/RUS.pub'\n",
        );
        let cfg = CoordinatorConfig::load(&p).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("data"));
        assert_eq!(cfg.members[0].public_key, key.verifying_key());
        assert_eq!(cfg.listen, default_listen());
    }

    #[test]
    fn node_coordinator_address_needs_a_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "n.toml",
            "insecure = true\nstate = 'KAZ'\nkey_file = 'k'\noutbox_dir = 'o'\ncoordinator = '127.0.0.1:50051'\n",
        );
        let msg = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("coordinator: '127.0.0.1:50051' must start with http://"),
            "{msg}"
        );
    }

    #[test]
    fn transport_must_be_chosen_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.toml", "data_dir = 'd'\nkey_file = 'k'\n");
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(
            msg.contains("c.toml")
                && msg.contains("[tls] is missing")
                && msg.contains("insecure = true"),
            "{msg}"
        );
        let p = write(
            dir.path(),
            "c2.toml",
            "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[tls]\ncert_file = 'a'\nkey_file = 'b'\nclient_ca_file = 'c'\n",
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("choose one"), "{msg}");
        let p = write(
            dir.path(),
            "c3.toml",
            "data_dir = 'd'\nkey_file = 'k'\n[tls]\ncert_file = 'a'\nkey_file = 'b'\nclient_ca_file = 'c'\n",
        );
        match CoordinatorConfig::load(&p).unwrap().transport {
            Transport::Tls(files) => assert_eq!(files.cert_file, dir.path().join("a")),
            Transport::Insecure => panic!("TLS expected"),
        }
    }

    #[test]
    fn operator_tokens_are_stored_as_digests_only() {
        let dir = tempfile::tempdir().unwrap();
        let digest = TokenDigest::of("tly_x").to_hex();
        let p = write(
            dir.path(),
            "c.toml",
            &format!(
                "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[[operators]]\nname = 'olga'\nrole = 'operator'\ntoken_sha256 = '{digest}'\n"
            ),
        );
        let cfg = CoordinatorConfig::load(&p).unwrap();
        assert_eq!(cfg.operators[0].0, TokenDigest::of("tly_x"));
        assert_eq!(cfg.operators[0].1.role, Role::Operator);

        let p = write(
            dir.path(),
            "c2.toml",
            "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[[operators]]\nname = 'olga'\nrole = 'operator'\ntoken_sha256 = 'tly_x'\n",
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("operators[0].token_sha256"), "{msg}");
        let p = write(
            dir.path(),
            "c3.toml",
            &format!(
                "insecure = true\ndata_dir = 'd'\nkey_file = 'k'\n[[operators]]\nname = 'x'\nrole = 'admin'\ntoken_sha256 = '{digest}'\n"
            ),
        );
        let msg = CoordinatorConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("admin"), "{msg}");
    }

    #[test]
    fn node_tls_and_scheme_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let base = "state = 'KAZ'\nkey_file = 'k'\noutbox_dir = 'o'\n";
        let p = write(
            dir.path(),
            "n1.toml",
            &format!("{base}coordinator = 'https://x:1'\n"),
        );
        let msg = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("[tls] is missing"), "{msg}");
        let p = write(
            dir.path(),
            "n2.toml",
            &format!(
                "{base}coordinator = 'http://x:1'\n[tls]\nca_file = 'ca'\ncert_file = 'c'\nkey_file = 'k'\n"
            ),
        );
        let msg = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("must start with https://"), "{msg}");
        let p = write(
            dir.path(),
            "n3.toml",
            &format!("{base}coordinator = 'https://x:1'\n[tls]\nca_file = 'ca'\n"),
        );
        let msg = NodeConfig::load(&p).unwrap_err().to_string();
        assert!(msg.contains("cert_file and key_file"), "{msg}");
        let p = write(
            dir.path(),
            "n4.toml",
            &format!(
                "{base}coordinator = 'https://x:1'\n[tls]\nca_file = 'ca'\ncert_file = 'c'\nkey_file = 'kk'\n"
            ),
        );
        let cfg = NodeConfig::load(&p).unwrap();
        assert_eq!(cfg.tls.unwrap().ca_file, dir.path().join("ca"));
    }
}
