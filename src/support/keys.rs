//! Ed25519 key files: generation, writing with safe permissions, and loading.
//!
//! Both files are one line of lowercase hex: the 32-byte secret seed in
//! `NAME.key` (mode 0600) and the 32-byte public key in `NAME.pub`. Hex keeps
//! them readable by any ministry's tooling without a key-format library.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected 64 hex digits (a 32-byte Ed25519 key)")]
    Malformed { path: PathBuf },
    #[error("{path}: not a valid Ed25519 public key")]
    InvalidPublicKey { path: PathBuf },
    #[error("{path} already exists; refusing to overwrite a key (remove it first)")]
    Exists { path: PathBuf },
    #[error("no secure random source: {0}")]
    Random(String),
    #[error(
        "{path}: private key file is open to group or others (mode {mode:04o}; at most 0600 allowed); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh key from the operating system's random source.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Paths of the private and public key files for `name` in `dir`.
pub(crate) fn key_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Writes `NAME.key` (0600, created exclusively) and `NAME.pub` into `dir`.
pub fn write_key_pair(
    dir: &Path,
    name: &str,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), KeyError> {
    write_key_files(dir, dir, name, key)
}

/// Writes `NAME.key` (0600, created exclusively) into `private_dir` and
/// `NAME.pub` into `public_dir`, so the public half can live where the
/// private one must not (e.g. a volume shared with the coordinator).
pub(crate) fn write_key_files(
    private_dir: &Path,
    public_dir: &Path,
    name: &str,
    key: &SigningKey,
) -> Result<(PathBuf, PathBuf), KeyError> {
    fs::create_dir_all(private_dir).map_err(io_err(private_dir))?;
    fs::create_dir_all(public_dir).map_err(io_err(public_dir))?;
    let (private, _) = key_paths(private_dir, name);
    let (_, public) = key_paths(public_dir, name);
    for p in [&private, &public] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    write_private_file(
        &private,
        format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
    )?;
    fs::write(
        &public,
        format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
    )
    .map_err(io_err(&public))?;
    Ok((private, public))
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
    })?;
    bytes.try_into().map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
    })
}

/// Refuses a private key file (Ed25519 or TLS) that group or others may
/// read, write or execute: any mode bit outside 0700. The mode is that of
/// the file a symbolic link points to.
pub(crate) fn check_private_permissions(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Writes a new secret file readable by its owner only (0600, created
/// exclusively, synced).
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    if path.exists() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Loads a private key, refusing a file that group or others can read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    check_private_permissions(path)?;
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Loads a public key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    parse_verifying_key(&read_hex32(path)?).ok_or_else(|| KeyError::InvalidPublicKey {
        path: path.to_path_buf(),
    })
}

/// Parses a 32-byte public key; `None` if it is not a valid curve point.
pub(crate) fn parse_verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).ok()
}

/// A fresh random bearer token: 32 random bytes, hex, with a prefix that makes
/// it recognisable in a secret scanner.
pub fn new_token() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(format!("tly_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_tokens_are_prefixed_random_hex() {
        let token = super::new_token().unwrap();
        assert!(token.starts_with("tly_") && token.len() == 4 + 64);
        assert_ne!(token, super::new_token().unwrap());
    }

    use super::*;

    #[test]
    fn written_keys_read_back_and_private_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let (private, public) = write_key_pair(dir.path(), "RUS", &key).unwrap();
        assert_eq!(
            read_signing_key(&private).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            write_key_pair(dir.path(), "RUS", &key),
            Err(KeyError::Exists { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn private_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (private, _) = write_key_pair(dir.path(), "KAZ", &generate().unwrap()).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_signing_key(&private),
            Err(KeyError::TooOpen { mode: 0o644, .. })
        ));
    }

    /// docs/protocol.md §7 ("Tally refuses to load a private key file that
    /// group or others can read") and deployment.md, Secrets: any bit for
    /// group or others is refused (group-readable 0640 as much as 0644),
    /// with the file and its mode in the message; modes of the owner alone
    /// are accepted.
    #[cfg(unix)]
    #[test]
    fn a_private_key_open_to_group_or_others_is_refused_whatever_the_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let (private, _) = write_key_pair(dir.path(), "KAZ", &key).unwrap();
        let refused = [0o640, 0o604, 0o620, 0o610, 0o602, 0o660, 0o644, 0o666];
        for mode in refused {
            fs::set_permissions(&private, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_signing_key(&private).unwrap_err();
            assert!(
                matches!(err, KeyError::TooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&private.display().to_string())
                    && message.contains(&format!("mode {mode:04o}"))
                    && message.contains("chmod 600"),
                "{message}"
            );
        }
        for mode in [0o600, 0o400, 0o700] {
            fs::set_permissions(&private, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_signing_key(&private).unwrap().to_bytes(),
                key.to_bytes(),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn malformed_key_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pub");
        fs::write(&p, "not hex").unwrap();
        let err = read_verifying_key(&p).unwrap_err().to_string();
        assert!(
            err.contains("x.pub") && err.contains("64 hex digits"),
            "{err}"
        );
    }
}
