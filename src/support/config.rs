//! TOML configuration for the coordinator and for member nodes.
//!
//! A configuration is read in three steps: the TOML file, then environment
//! overrides, then validation. Unknown keys and bad values are rejected with
//! the file name and the offending key in the message (and the environment
//! variable, when the value came from one). Relative paths inside a file are
//! resolved against the directory that contains it, so a config directory can
//! be moved as a whole; relative paths given in the environment are resolved
//! against the current directory, like paths on a command line.
//!
//! # Environment overrides
//! Every scalar key can be overridden by an environment variable named
//! `TALLY_<KEY>` for a top-level key and `TALLY_<SECTION>_<KEY>` for a key in
//! a `[section]`, upper case: `listen` is `TALLY_LISTEN`,
//! `[limits] max_items_per_snapshot` is `TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT`.
//! The names are derived from the configuration types themselves (see
//! [`env_keys`]), so a new key or `[section]` is overridable without further
//! code. Values
//! are TOML values (`100`, `true`, `["RUS", "KAZ"]`); anything that is not
//! TOML, and any value of a key that is a string in the file, is taken as a
//! string, so `TALLY_LISTEN=0.0.0.0:50051` needs no quotes. Arrays of tables
//! (`[[members]]`) have no environment form.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::access::{Person, Role, TokenDigest};
use crate::serial::CanonicalRule;
use crate::state::{StateCode, StateSet};
use crate::support::keys;
use crate::support::tls::{ClientTlsFiles, ServerTlsFiles};

/// Prefix of every environment variable that overrides a configuration key.
pub(crate) const ENV_PREFIX: &str = "TALLY_";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is part of the message, not a `source`: printed as a chain,
    // it would appear twice.
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {error}")]
    Key {
        path: PathBuf,
        error: keys::KeyError,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Looks up an environment variable; tests pass their own map instead of
/// the process environment.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`CoordinatorConfig::load`] and [`NodeConfig::load`].
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Field names of a `#[derive(Deserialize)]` struct, asked of serde itself:
/// the derived code hands its field list to `deserialize_struct`, which this
/// probe records before stopping.
mod introspect {
    use serde::de::{self, Deserializer, Visitor};

    #[derive(Debug)]
    pub(crate) struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("introspection stop")
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_msg: T) -> Self {
            Stop
        }
    }

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        // An optional section (`tls: Option<...>`) is a section all the same.
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
            visitor.visit_some(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    /// The field names of `T`, or none if `T` is not a struct.
    pub fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
        let mut out: &'static [&'static str] = &[];
        let _ = T::deserialize(Probe(&mut out));
        out
    }

    /// `T`'s fields, each with the fields of its own type if that is a
    /// struct (a TOML `[section]`), else with none. Each field is found by
    /// offering `T` a map with that one key and probing the value's type.
    pub fn sections<T: serde::de::DeserializeOwned>() -> Vec<(&'static str, &'static [&'static str])>
    {
        fields::<T>()
            .iter()
            .map(|field| {
                let mut inner: &'static [&'static str] = &[];
                let _ = T::deserialize(OneField {
                    key: field,
                    out: &mut inner,
                });
                (*field, inner)
            })
            .collect()
    }

    /// A struct with a single key, whose value is a [`Probe`].
    struct OneField<'a> {
        key: &'static str,
        out: &'a mut &'static [&'static str],
    }

    impl<'de> Deserializer<'de> for OneField<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Stop> {
            visitor.visit_map(OneKey {
                key: Some(self.key),
                out: self.out,
            })
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    struct OneKey<'a> {
        key: Option<&'static str>,
        out: &'a mut &'static [&'static str],
    }

    impl<'de> de::MapAccess<'de> for OneKey<'_> {
        type Error = Stop;

        fn next_key_seed<K: de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Stop> {
            match self.key.take() {
                Some(key) => seed
                    .deserialize(de::value::StrDeserializer::<Stop>::new(key))
                    .map(Some),
                None => Ok(None),
            }
        }

        fn next_value_seed<V: de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Stop> {
            seed.deserialize(Probe(self.out))
        }
    }
}
/// The keys of one configuration kind that the environment can override.
struct EnvSchema {
    keys: EnvKeys,
}

impl EnvSchema {
    /// `T`'s keys: its scalar fields, and the fields of each field that is
    /// a struct (a `[section]`); `no_env` (arrays of tables) left out.
    fn of<T: DeserializeOwned>(no_env: &[&str]) -> EnvSchema {
        let var = |path: &str| format!("{ENV_PREFIX}{}", path.replace('.', "_").to_uppercase());
        let mut keys = Vec::new();
        for (field, inner) in introspect::sections::<T>() {
            if no_env.contains(&field) {
                continue;
            }
            if inner.is_empty() {
                keys.push((field.to_string(), var(field)));
            }
            for f in inner {
                let path = format!("{field}.{f}");
                keys.push((path.clone(), var(&path)));
            }
        }
        EnvSchema { keys }
    }
}

/// `(dotted key, environment variable)` pairs, e.g.
/// `("limits.max_items_per_snapshot", "TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT")`.
pub(crate) type EnvKeys = Vec<(String, String)>;

/// Every `(dotted key, environment variable)` pair of the coordinator's
/// configuration, then of a node's, in declaration order.
pub fn env_keys() -> (EnvKeys, EnvKeys) {
    (coordinator_schema().keys, node_schema().keys)
}

fn coordinator_schema() -> EnvSchema {
    EnvSchema::of::<RawCoordinatorConfig>(&["members", "operators"])
}

fn node_schema() -> EnvSchema {
    EnvSchema::of::<RawNodeConfig>(&[])
}

/// A file's values with the environment applied, and which keys the
/// environment set, so that messages can name the variable.
struct Layered<T> {
    raw: T,
    file: PathBuf,
    base: PathBuf,
    /// `(dotted key, variable name)` of every key the environment set.
    overridden: Vec<(String, String)>,
}

impl<T> Layered<T> {
    /// `key`, and the variable that set it if one did: how messages name a key.
    fn key(&self, key: &str) -> String {
        match self.overridden.iter().find(|(k, _)| k == key) {
            Some((_, var)) => format!("{key} (from {var})"),
            None => key.to_string(),
        }
    }

    fn bad(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        invalid(&self.file, format!("{}: {message}", self.key(key)))
    }

    /// A path value: relative to the config file's directory if the file
    /// gave it, to the current directory if the environment did.
    fn path(&self, key: &str, p: &Path) -> PathBuf {
        if p.is_absolute() || self.overridden.iter().any(|(k, _)| k == key) {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// Parses `text` as a TOML value for an override; if it is not one, or the
/// file holds a string for this key, the text itself is the (string) value.
fn env_value(text: &str, in_file: Option<&toml::Value>) -> toml::Value {
    if matches!(in_file, Some(toml::Value::String(_))) {
        return toml::Value::String(text.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn load_layered<T: DeserializeOwned>(
    path: &Path,
    schema: &EnvSchema,
    env: EnvLookup<'_>,
) -> Result<Layered<T>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| invalid(path, e.to_string().trim_end()))?;
    let mut overridden = Vec::new();
    for (key, var) in &schema.keys {
        let Some(value) = env(var) else { continue };
        let (section, name) = match key.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, key.as_str()),
        };
        let target = match section {
            None => &mut table,
            Some(s) => match table
                .entry(s.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(invalid(
                        path,
                        format!("{s}: is not a [{s}] section, so {var} cannot set {key}"),
                    ));
                }
            },
        };
        let v = env_value(&value, target.get(name));
        target.insert(name.to_string(), v);
        overridden.push((key.clone(), var.clone()));
    }
    let raw = if overridden.is_empty() {
        // From the text, so that errors point at the line and column.
        toml::from_str(&text).map_err(|e| invalid(path, e.to_string().trim_end()))?
    } else {
        T::deserialize(toml::Value::Table(table)).map_err(|e| {
            let vars: Vec<&str> = overridden.iter().map(|(_, v)| v.as_str()).collect();
            invalid(
                path,
                format!(
                    "{} (environment overrides: {})",
                    e.to_string().trim_end().replace('\n', " "),
                    vars.join(", ")
                ),
            )
        })?
    };
    Ok(Layered {
        raw,
        file: path.to_path_buf(),
        base: base_dir(path),
        overridden,
    })
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

/// Smallest `limits.max_message_bytes` accepted: a reference node's chunk
/// (see [`crate::snapshot::CHUNK_TARGET_BYTES`]) with room for its last leaf
/// and the message framing. Below it, every large export would be refused.
pub(crate) const MIN_MESSAGE_BYTES: usize = crate::snapshot::CHUNK_TARGET_BYTES + 64 * 1024;

/// Limits the coordinator enforces on submissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest snapshot accepted, in items.
    pub max_items_per_snapshot: u64,
    /// Largest gRPC message decoded, in bytes (one chunk of leaves).
    pub max_message_bytes: usize,
    /// Uploads verified at the same time; more are refused at once with
    /// UNAVAILABLE (load shedding; nodes retry with backoff).
    pub max_concurrent_uploads: usize,
    /// Longest wait for the next message of an upload, in seconds: a stalled
    /// client is dropped and nothing of its upload is stored.
    pub upload_idle_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items_per_snapshot: 20_000_000,
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_uploads: 8,
            upload_idle_timeout_seconds: 60,
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
    /// How often the engine checkpoint is written while the coordinator
    /// runs (if anything was reconciled since the last one), in seconds;
    /// 0: only at a clean stop. A restart after a crash replays only what
    /// came after the last checkpoint.
    pub checkpoint_seconds: u64,
}

/// Default of `reconcile.checkpoint_seconds`.
pub(crate) const DEFAULT_CHECKPOINT_SECONDS: u64 = 600;

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            transfer_grace_hours: 168.0,
            tick_seconds: 60,
            checkpoint_seconds: DEFAULT_CHECKPOINT_SECONDS,
        }
    }
}

/// The Prometheus endpoint (`[metrics]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address of the HTTP server answering `GET /metrics`; absent: no
    /// metrics endpoint.
    pub listen: Option<SocketAddr>,
}

/// Graceful shutdown on SIGTERM or Ctrl-C (`[shutdown]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Seconds to let submissions in flight finish before they are dropped
    /// (they leave nothing stored) and the process exits.
    pub grace_seconds: u64,
}

/// Largest `shutdown.grace_seconds` accepted.
pub(crate) const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings { grace_seconds: 10 }
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
    #[serde(default)]
    metrics: MetricsSettings,
    #[serde(default)]
    shutdown: ShutdownSettings,
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
    pub metrics: MetricsSettings,
    pub shutdown: ShutdownSettings,
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

    /// Loads `path` with environment overrides from the process environment.
    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// Loads `path`, taking overrides from `env` (see the module documentation).
    pub fn load_with_env(
        path: &Path,
        env: EnvLookup<'_>,
    ) -> Result<CoordinatorConfig, ConfigError> {
        let cfg: Layered<RawCoordinatorConfig> = load_layered(path, &coordinator_schema(), env)?;
        check_coordinator_values(path, &cfg)?;
        // Keys are read last: a bad value is reported without needing key files.
        let members = load_members(path, &cfg)?;
        let transport = server_transport(path, &cfg)?;
        let operators = load_operators(path, &cfg)?;
        let raw = &cfg.raw;
        Ok(CoordinatorConfig {
            listen: raw.listen,
            data_dir: cfg.path("data_dir", &raw.data_dir),
            key_file: cfg.path("key_file", &raw.key_file),
            limits: raw.limits.clone(),
            canonical: raw.canonical.clone(),
            reconcile: raw.reconcile.clone(),
            members,
            metrics: raw.metrics.clone(),
            shutdown: raw.shutdown.clone(),
            transport,
            operators,
        })
    }
}

/// Every coordinator setting that must hold before anything else is read.
fn check_coordinator_values(
    path: &Path,
    cfg: &Layered<RawCoordinatorConfig>,
) -> Result<(), ConfigError> {
    let raw = &cfg.raw;
    raw.canonical
        .check()
        .map_err(|e| cfg.bad("canonical.remove_chars", e))?;
    if raw.members.len() > crate::reconcile::MAX_STATES {
        return Err(invalid(
            path,
            format!(
                "members: at most {} states are supported",
                crate::reconcile::MAX_STATES
            ),
        ));
    }
    if raw.limits.max_message_bytes < MIN_MESSAGE_BYTES {
        return Err(cfg.bad(
            "limits.max_message_bytes",
            format!(
                "must be at least {MIN_MESSAGE_BYTES}: the reference node sends chunks of \
                 up to {} bytes of leaves plus one leaf",
                crate::snapshot::CHUNK_TARGET_BYTES
            ),
        ));
    }
    if raw.limits.max_items_per_snapshot == 0 {
        return Err(cfg.bad("limits.max_items_per_snapshot", "must be at least 1"));
    }
    if !(raw.reconcile.transfer_grace_hours.is_finite()
        && raw.reconcile.transfer_grace_hours >= 0.0)
    {
        return Err(cfg.bad("reconcile.transfer_grace_hours", "must be 0 or more"));
    }
    if raw.limits.max_concurrent_uploads == 0 {
        return Err(cfg.bad("limits.max_concurrent_uploads", "must be at least 1"));
    }
    if raw.limits.upload_idle_timeout_seconds == 0 {
        return Err(cfg.bad("limits.upload_idle_timeout_seconds", "must be at least 1"));
    }
    if raw.reconcile.tick_seconds == 0 {
        return Err(cfg.bad("reconcile.tick_seconds", "must be at least 1"));
    }
    if raw.shutdown.grace_seconds > MAX_SHUTDOWN_GRACE_SECONDS {
        return Err(cfg.bad(
            "shutdown.grace_seconds",
            format!("must be at most {MAX_SHUTDOWN_GRACE_SECONDS}"),
        ));
    }
    Ok(())
}

/// The member states, with their public keys (from the file or a key file).
fn load_members(
    path: &Path,
    cfg: &Layered<RawCoordinatorConfig>,
) -> Result<Vec<Member>, ConfigError> {
    let raw = &cfg.raw;
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
                keys::read_verifying_key(&resolve(&cfg.base, file)).map_err(|error| {
                    ConfigError::Key {
                        path: path.to_path_buf(),
                        error,
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
    Ok(members)
}

/// TLS files, or plaintext only when asked for in so many words.
fn server_transport(
    path: &Path,
    cfg: &Layered<RawCoordinatorConfig>,
) -> Result<Transport, ConfigError> {
    let raw = &cfg.raw;
    let transport = match (raw.insecure, &raw.tls) {
        (false, Some(files)) => Transport::Tls(ServerTlsFiles {
            cert_file: cfg.path("tls.cert_file", &files.cert_file),
            key_file: cfg.path("tls.key_file", &files.key_file),
            client_ca_file: cfg.path("tls.client_ca_file", &files.client_ca_file),
        }),
        (true, None) => Transport::Insecure,
        (true, Some(_)) => {
            return Err(cfg.bad(
                "insecure",
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
    Ok(transport)
}

/// The operators' and auditors' token digests.
fn load_operators(
    path: &Path,
    cfg: &Layered<RawCoordinatorConfig>,
) -> Result<Vec<(TokenDigest, Person)>, ConfigError> {
    let raw = &cfg.raw;
    let mut operators: Vec<(TokenDigest, Person)> = Vec::new();
    for (i, o) in raw.operators.iter().enumerate() {
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
                name: o.name.clone(),
                role: o.role,
            },
        ));
    }
    Ok(operators)
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

/// How `tally node watch` polls its drop folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSettings {
    /// Time between two scans of the drop folder, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            poll_interval_ms: 1000,
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
    #[serde(default)]
    watch: WatchSettings,
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
    pub watch: WatchSettings,
    pub canonical: CanonicalRule,
    /// TLS towards the coordinator; `None` only with `insecure = true`.
    pub tls: Option<ClientTlsFiles>,
}

impl NodeConfig {
    /// Loads `path` with environment overrides from the process environment.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        Self::load_with_env(path, &process_env)
    }

    /// Loads `path`, taking overrides from `env` (see the module documentation).
    pub fn load_with_env(path: &Path, env: EnvLookup<'_>) -> Result<NodeConfig, ConfigError> {
        let cfg: Layered<RawNodeConfig> = load_layered(path, &node_schema(), env)?;
        let raw = &cfg.raw;
        if !(raw.coordinator.starts_with("http://") || raw.coordinator.starts_with("https://")) {
            return Err(cfg.bad(
                "coordinator",
                format!("'{}' must start with http:// or https://", raw.coordinator),
            ));
        }
        raw.canonical
            .check()
            .map_err(|e| cfg.bad("canonical.remove_chars", e))?;
        if raw.retry.initial_backoff_ms == 0 {
            return Err(cfg.bad("retry.initial_backoff_ms", "must be at least 1"));
        }
        if raw.retry.max_backoff_ms < raw.retry.initial_backoff_ms {
            return Err(cfg.bad(
                "retry.max_backoff_ms",
                format!(
                    "must be at least retry.initial_backoff_ms ({})",
                    raw.retry.initial_backoff_ms
                ),
            ));
        }
        if raw.watch.poll_interval_ms < 10 {
            return Err(cfg.bad("watch.poll_interval_ms", "must be at least 10"));
        }
        let https = raw.coordinator.starts_with("https://");
        let tls = match (raw.insecure, &raw.tls) {
            (false, Some(files)) if https => {
                let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) else {
                    return Err(cfg.bad(
                        "tls",
                        "cert_file and key_file (this state's client certificate) are required",
                    ));
                };
                Some(ClientTlsFiles {
                    ca_file: cfg.path("tls.ca_file", &files.ca_file),
                    cert_file: Some(cfg.path("tls.cert_file", cert)),
                    key_file: Some(cfg.path("tls.key_file", key)),
                    server_name: files.server_name.clone(),
                })
            }
            (false, Some(_)) => {
                return Err(cfg.bad(
                    "coordinator",
                    format!(
                        "'{}' must start with https:// when [tls] is set",
                        raw.coordinator
                    ),
                ));
            }
            (true, None) if !https => None,
            (true, _) => {
                return Err(cfg.bad(
                    "insecure",
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
            .as_ref()
            .map(|f| keys::read_verifying_key(&cfg.path("coordinator_public_key_file", f)))
            .transpose()
            .map_err(|error| ConfigError::Key {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(NodeConfig {
            state: raw.state,
            key_file: cfg.path("key_file", &raw.key_file),
            coordinator: raw.coordinator.clone(),
            outbox_dir: cfg.path("outbox_dir", &raw.outbox_dir),
            coordinator_public_key,
            known_states: raw
                .known_states
                .clone()
                .map_or_else(StateSet::members, |v| v.into_iter().collect()),
            retry: raw.retry.clone(),
            watch: raw.watch.clone(),
            canonical: raw.canonical.clone(),
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
    fn environment_names_come_from_the_types_sections_included() {
        let (coordinator, node) = env_keys();
        let has =
            |keys: &EnvKeys, key: &str, var: &str| keys.iter().any(|(k, v)| k == key && v == var);
        assert!(has(&coordinator, "listen", "TALLY_LISTEN"));
        assert!(has(
            &coordinator,
            "limits.max_items_per_snapshot",
            "TALLY_LIMITS_MAX_ITEMS_PER_SNAPSHOT"
        ));
        assert!(has(
            &coordinator,
            "canonical.remove_chars",
            "TALLY_CANONICAL_REMOVE_CHARS"
        ));
        assert!(!coordinator.iter().any(|(k, _)| k.starts_with("members")));
        assert!(has(&node, "known_states", "TALLY_KNOWN_STATES"));
        assert!(has(
            &node,
            "watch.poll_interval_ms",
            "TALLY_WATCH_POLL_INTERVAL_MS"
        ));
        // Optional sections are sections too; arrays of tables have no form.
        assert!(has(
            &coordinator,
            "tls.client_ca_file",
            "TALLY_TLS_CLIENT_CA_FILE"
        ));
        assert!(has(&node, "tls.server_name", "TALLY_TLS_SERVER_NAME"));
        assert!(has(&node, "insecure", "TALLY_INSECURE"));
        assert!(!coordinator.iter().any(|(k, _)| k.starts_with("operators")));
        assert_eq!(coordinator.len(), 18, "{coordinator:?}");
        assert_eq!(node.len(), 17, "{node:?}");
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
