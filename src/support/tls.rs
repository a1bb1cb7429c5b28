//! TLS material for the coordinator and its clients (rustls with the ring
//! provider, through tonic), and the member state a client certificate names.
//!
//! Identity rule: a node certificate names its state by a URI subject
//! alternative name `urn:tally:state:<CODE>`; certificates without one are
//! read by their subject common name, which must then be the bare state code.
//! This lets an existing PKI issue node certificates either way.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::state::StateCode;

/// Prefix of the URI SAN that names a member state.
pub(crate) const STATE_URI_PREFIX: &str = "urn:tally:state:";

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM file ({what} expected)")]
    NotPem { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Key(#[from] crate::support::keys::KeyError),
    #[error("client certificate is not valid X.509: {0}")]
    BadCertificate(String),
    #[error(
        "client certificate names no member state (subject {subject:?}); {STATE_URI_PREFIX}<CODE> SAN or CN=<CODE> expected"
    )]
    NoState { subject: String },
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}

/// The coordinator's TLS files (`[tls]` in its configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// The coordinator's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM); must not be readable by others.
    pub key_file: PathBuf,
    /// CA certificate(s) (PEM) that issue member-node client certificates.
    pub client_ca_file: PathBuf,
}

impl ServerTlsFiles {
    /// Server config: client certificates are verified against the client
    /// CA when presented, but optional at the TLS layer, because operators
    /// authenticate with bearer tokens instead; the access layer decides.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        crate::support::keys::check_private_permissions(&self.key_file)?;
        let cert = read_pem(&self.cert_file, "certificate")?;
        let key = read_pem(&self.key_file, "private key")?;
        let ca = read_pem(&self.client_ca_file, "CA certificate")?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true))
    }
}

/// A client's TLS files (`[tls]` of a node, or the operator CLI's flags).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// CA certificate (PEM) that issued the coordinator's certificate.
    pub ca_file: PathBuf,
    /// Client certificate (PEM): required for member nodes.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Name to expect in the coordinator's certificate, if it differs from
    /// the host in the coordinator address.
    pub server_name: Option<String>,
}

impl ClientTlsFiles {
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let ca = read_pem(&self.ca_file, "CA certificate")?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            crate::support::keys::check_private_permissions(key)?;
            config = config.identity(Identity::from_pem(
                read_pem(cert, "certificate")?,
                read_pem(key, "private key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// The member state a (verified) client certificate names.
pub fn certificate_state(der: &[u8]) -> Result<StateCode, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(code) = uri.strip_prefix(STATE_URI_PREFIX)
            {
                return StateCode::parse(code).map_err(|_| TlsError::NoState {
                    subject: uri.to_string(),
                });
            }
        }
    }
    let subject = cert.subject().to_string();
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .and_then(|cn| StateCode::parse(cn).ok())
        .ok_or(TlsError::NoState { subject })
}

/// Why a client could not set up its connection.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("coordinator address '{address}': {message}")]
    Address { address: String, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// How often both ends of a gRPC connection ping an otherwise quiet peer.
pub(crate) const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is dropped.
pub(crate) const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A client endpoint for `address`, with TLS when `tls` is given. An
/// `https://` address without TLS files, or TLS files with an `http://`
/// address, is refused rather than silently downgraded.
pub fn endpoint(
    address: &str,
    tls: Option<&ClientTlsFiles>,
) -> Result<tonic::transport::Endpoint, EndpointError> {
    let bad = |message: &str| EndpointError::Address {
        address: address.to_string(),
        message: message.to_string(),
    };
    let endpoint = tonic::transport::Channel::from_shared(address.to_string())
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A peer that vanished without closing the connection (host down,
        // network cut) is noticed by a missed ping: without it, a call whose
        // requests were all sent would wait for its answer forever, and
        // retries would never start.
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match (address.starts_with("https://"), tls) {
        (true, Some(files)) => endpoint
            .tls_config(files.client_config()?)
            .map_err(|e| bad(&e.to_string())),
        (true, None) => Err(bad(
            "https:// needs the CA certificate that issued the coordinator's certificate (--ca FILE or [tls] ca_file)",
        )),
        (false, Some(_)) => Err(bad(
            "TLS files are configured but the address is http://; use https://",
        )),
        (false, None) => Ok(endpoint),
    }
}

/// The TLS failure somewhere in a transport error's cause chain, if any.
///
/// A TLS failure (an untrusted or mismatched certificate, a refused client
/// certificate, TLS spoken to a plaintext port) is a configuration problem:
/// retrying cannot fix it, so callers report it instead of backing off. The
/// TLS stack reports these as I/O errors of kind `InvalidData` (a fatal alert
/// received from the peer arrives only as text), while a network that is down
/// gives other kinds (refused, reset, timed out).
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return Some(match io.get_ref() {
                Some(inner) => inner.to_string(),
                None => io.to_string(),
            });
        }
        next = err.source();
    }
    None
}

/// The full cause chain of a transport error: tonic's own message is often
/// only "transport error", the useful part (certificate, handshake) is below.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::support::keys::KeyError;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[track_caller]
    fn assert_too_open(result: Result<impl Sized, TlsError>, key: &Path, mode: u32) {
        let Err(err) = result else {
            panic!("{} with mode {mode:o} was accepted", key.display());
        };
        assert!(
            matches!(&err, TlsError::Key(KeyError::TooOpen { path, mode: m }) if path == key && *m == mode),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&key.display().to_string())
                && message.contains(&format!("mode {mode:04o}")),
            "{message}"
        );
    }

    /// deployment.md, Secrets: TLS private keys get the same refusal as
    /// Ed25519 keys, on both sides: the coordinator's `tls.key_file` and a
    /// node's client key, group-readable (0640) or world-readable (0644);
    /// 0600 is accepted.
    #[test]
    fn a_tls_private_key_open_to_group_or_others_is_refused_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let rus = StateCode::parse("RUS").unwrap();
        let pki = crate::support::certs::init(dir.path(), &[rus], &[]).unwrap();
        let server = ServerTlsFiles {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            client_ca_file: pki.ca_cert.clone(),
        };
        let (_, client_cert, client_key) = pki.clients[0].clone();
        let client = ClientTlsFiles {
            ca_file: pki.ca_cert.clone(),
            cert_file: Some(client_cert),
            key_file: Some(client_key.clone()),
            server_name: None,
        };
        assert!(server.server_config().is_ok());
        assert!(client.client_config().is_ok());
        for mode in [0o640, 0o644] {
            chmod(&server.key_file, mode);
            assert_too_open(server.server_config(), &server.key_file, mode);
            chmod(&client_key, mode);
            assert_too_open(client.client_config(), &client_key, mode);
            assert_too_open(
                endpoint("https://localhost:1", Some(&client)).map_err(|e| match e {
                    EndpointError::Tls(e) => e,
                    other => panic!("{other}"),
                }),
                &client_key,
                mode,
            );
        }
        chmod(&server.key_file, 0o600);
        chmod(&client_key, 0o600);
        assert!(server.server_config().is_ok());
        assert!(client.client_config().is_ok());
    }
}
