//! `tally certs init`: a small demo PKI (one CA, the coordinator's server
//! certificate, one client certificate per member state) for the demo and
//! docker-compose. Production deployments use their own PKI; see
//! docs/deployment.md, "Security", for what the certificates must contain.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::state::StateCode;
use crate::support::keys::{self, KeyError};
use crate::support::tls::STATE_URI_PREFIX;

/// Why the PKI could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Names the coordinator's certificate always covers, so the demo, tests
/// and the compose network (service name `coordinator`) connect without
/// configuration.
pub(crate) const DEFAULT_SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1", "coordinator"];

/// The files written, for the caller to print.
#[derive(Debug, Clone)]
pub struct WrittenPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub clients: Vec<(StateCode, PathBuf, PathBuf)>,
}

fn validity(params: &mut CertificateParams) {
    // Whole years from now: a demo PKI that does not expire mid-exercise,
    // but does expire.
    let year = 1970
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 3, 1, 1);
}

fn write_public(path: &Path, pem: &str) -> Result<(), CertsError> {
    if path.exists() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        }
        .into());
    }
    std::fs::write(path, pem).map_err(|source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `ca.crt`, `ca.key`, `coordinator.crt`, `coordinator.key` and
/// `<STATE>.crt`, `<STATE>.key` for each state into `dir`. Private keys are
/// 0600; nothing existing is overwritten.
pub fn init(
    dir: &Path,
    states: &[StateCode],
    extra_server_names: &[String],
) -> Result<WrittenPki, CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Tally demo CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = DEFAULT_SERVER_NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(extra_server_names.iter().cloned())
        .collect();
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "Tally coordinator");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let written = WrittenPki {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("coordinator.crt"),
        server_key: dir.join("coordinator.key"),
        clients: states
            .iter()
            .map(|s| {
                (
                    *s,
                    dir.join(format!("{s}.crt")),
                    dir.join(format!("{s}.key")),
                )
            })
            .collect(),
    };
    // Refuse before writing anything, so a second run leaves the first intact.
    for p in [
        &written.ca_cert,
        &written.server_cert,
        &written.server_key,
        &dir.join("ca.key"),
    ]
    .into_iter()
    .chain(written.clients.iter().flat_map(|(_, c, k)| [c, k]))
    {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() }.into());
        }
    }

    write_public(&written.ca_cert, &ca_cert.pem())?;
    keys::write_private_file(&dir.join("ca.key"), ca_key_pem.as_bytes())?;
    write_public(&written.server_cert, &server_cert.pem())?;
    keys::write_private_file(&written.server_key, server_key.serialize_pem().as_bytes())?;

    for (state, cert_path, key_path) in &written.clients {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, state.as_str());
        params.subject_alt_names = vec![SanType::URI(
            format!("{STATE_URI_PREFIX}{state}").try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        write_public(cert_path, &cert.pem())?;
        keys::write_private_file(key_path, key.serialize_pem().as_bytes())?;
    }
    Ok(written)
}
