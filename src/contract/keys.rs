//! Key material: Ed25519 private keys (PEM PKCS#8 or raw seed) and public keys (PEM SPKI or
//! hex), with the file-mode guard of SPEC 3d under a [`KeyPolicy`] (the configuration maps its
//! `ENVIRONMENT` onto one; the contract does not reach up into the configuration).
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::path::{Path, PathBuf};

/// How strictly private key files are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyPolicy {
    /// Any readable file (development).
    #[default]
    Lenient,
    /// Private key files must not be readable by group or others: mode 0600 (staging and
    /// production).
    OwnerOnly,
}

/// Why a key could not be loaded. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A private key file is readable by group or others under [`KeyPolicy::OwnerOnly`]
    /// (staging and production).
    #[error("private key file {path} has mode {mode:o}; staging and production require 0600 (chmod 600)")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key in an accepted format.
    #[error("invalid key {what}: {detail}")]
    Invalid {
        /// What was being parsed (file name or `hex`).
        what: String,
        /// Why it failed (no key bytes).
        detail: String,
    },
}

fn invalid(what: impl Into<String>, detail: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        what: what.into(),
        detail: detail.into(),
    }
}

/// Loads a private key file: PEM PKCS#8 (`openssl genpkey -algorithm ed25519`), a raw 32-byte
/// seed, or 64 hex characters. In staging and production, refuses a file readable by group or
/// others.
pub fn load_signing_key(path: &Path, policy: KeyPolicy) -> Result<SigningKey, KeyError> {
    check_private_key_file(path, policy)?;
    // The file's bytes are key material: wiped once parsed.
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?);
    parse_signing_key(&bytes).map_err(|detail| invalid(path.display().to_string(), detail))
}

/// Refuses a private key file (signing key, TLS client key) that group or others may read,
/// in staging and production; anything goes in development.
pub fn check_private_key_file(path: &Path, policy: KeyPolicy) -> Result<(), KeyError> {
    match policy {
        KeyPolicy::OwnerOnly => check_private_mode(path),
        KeyPolicy::Lenient => Ok(()),
    }
}

#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Parses private key bytes: PEM PKCS#8, raw 32-byte seed, or 64 hex characters.
pub fn parse_signing_key(bytes: &[u8]) -> Result<SigningKey, String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let t = text.trim();
        if t.starts_with("-----BEGIN") {
            return SigningKey::from_pkcs8_pem(t)
                .map_err(|e| format!("not a PEM PKCS#8 Ed25519 private key ({e})"));
        }
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let seed = zeroize::Zeroizing::new(decode_hex32(t).map_err(|e| e.to_string())?);
            return Ok(SigningKey::from_bytes(&seed));
        }
    }
    let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        bytes
            .try_into()
            .map_err(|_| "expected PEM PKCS#8, a 32-byte seed or 64 hex characters".to_string())?,
    );
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a public key: PEM SPKI (`PUBLIC KEY`) or 64 hex characters.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(t)
            .map_err(|e| format!("not a PEM SPKI Ed25519 public key ({e})"));
    }
    let raw = decode_hex32(t).map_err(|e| e.to_string())?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 point".to_string())
}

/// Parses a raw public key (PEM SPKI or hex) to its 32 bytes, without requiring a valid point.
pub fn parse_public_key_bytes(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        return parse_public_key(t).map(|k| k.to_bytes());
    }
    decode_hex32(t).map_err(|e| e.to_string())
}

/// Checks that `raw` may be trusted (SPEC 3d): a valid Ed25519 point that is not of small
/// order. A weak key verifies forged signatures of many messages, so stores refuse it.
pub fn check_trusted_key(raw: [u8; 32]) -> Result<[u8; 32], String> {
    let key =
        VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 point".to_string())?;
    if key.is_weak() {
        return Err("a small-order (weak) Ed25519 public key; refused".into());
    }
    Ok(raw)
}

/// Reads a public key file (PEM SPKI or hex).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key(&text).map_err(|d| invalid(path.display().to_string(), d))
}

/// Decodes exactly 64 hex characters into 32 bytes.
pub fn decode_hex32(text: &str) -> Result<[u8; 32], KeyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|e| invalid("hex", format!("expected 64 hex characters ({e})")))?;
    Ok(out)
}

/// A fresh random signing key from the OS random source.
pub fn generate_signing_key() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| invalid("random seed", e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// PEM PKCS#8 text of a private key.
pub fn private_key_pem(key: &SigningKey) -> Result<String, KeyError> {
    key.to_pkcs8_pem(Default::default())
        .map(|z| z.to_string())
        .map_err(|e| invalid("private key", e.to_string()))
}

/// PEM SPKI text of a public key.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(Default::default())
        .map_err(|e| invalid("public key", e.to_string()))
}

/// Writes a private key as PEM PKCS#8 with mode 0600, refusing to overwrite.
pub fn write_private_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    use std::io::Write;
    let pem = private_key_pem(key)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_mode_guard() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let path = dir.path().join("k.pem");
        write_private_key(&path, &key).unwrap();
        let back = load_signing_key(&path, KeyPolicy::OwnerOnly).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = load_signing_key(&path, KeyPolicy::OwnerOnly).unwrap_err();
            assert!(matches!(
                err,
                KeyError::InsecurePermissions { mode: 0o640, .. }
            ));
            // development does not enforce the mode
            load_signing_key(&path, KeyPolicy::Lenient).unwrap();
        }
    }

    #[test]
    fn seed_formats() {
        let raw = [3u8; 32];
        assert_eq!(parse_signing_key(&raw).unwrap().to_bytes(), raw);
        let hex = hex::encode(raw);
        assert_eq!(parse_signing_key(hex.as_bytes()).unwrap().to_bytes(), raw);
        assert!(parse_signing_key(b"short").is_err());
    }

    #[test]
    fn public_key_formats() {
        let key = SigningKey::from_bytes(&[5u8; 32]).verifying_key();
        let pem = public_key_pem(&key).unwrap();
        assert_eq!(parse_public_key(&pem).unwrap(), key);
        assert_eq!(parse_public_key(&hex::encode(key.to_bytes())).unwrap(), key);
        assert!(parse_public_key("zz").is_err());
    }
}
