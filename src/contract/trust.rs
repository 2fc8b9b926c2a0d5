//! The trust store for `control.*` signers (SPEC 3d): a directory of PEM public keys,
//! optionally with `validator_registry.json`.

use super::keys::{self, KeyError};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The registry file name looked for in a trust directory.
pub(crate) const REGISTRY_FILE: &str = "validator_registry.json";

/// Why a trust store could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A file or directory could not be read.
    #[error("cannot read trust store {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file or registry entry is not a valid public key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The registry JSON is not valid.
    #[error("invalid {path}: {detail}")]
    Registry {
        /// The registry file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl TrustError {
    /// The file (or item) at fault, for logs and the reload-failure metric.
    pub(crate) fn culprit(&self) -> String {
        match self {
            TrustError::Io { path, .. } | TrustError::Registry { path, .. } => {
                path.display().to_string()
            }
            TrustError::Key(KeyError::Io { path, .. })
            | TrustError::Key(KeyError::InsecurePermissions { path, .. }) => {
                path.display().to_string()
            }
            TrustError::Key(KeyError::Invalid { what, .. }) => what.clone(),
        }
    }
}

/// A validator entry of `validator_registry.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ValidatorEntry {
    /// The validator's node id.
    #[serde(default)]
    pub node_id: serde_json::Value,
    /// Path of its PEM public key (relative to the trust directory).
    #[serde(default)]
    pub public_key_path: Option<String>,
    /// Its public key as 64 hex characters.
    #[serde(default)]
    pub public_key_hex: Option<String>,
}

/// The BFT parameters of `validator_registry.json`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct BftConfig {
    /// Number of validators.
    pub total_validators: u32,
    /// Signatures needed for a quorum.
    pub quorum_size: u32,
}

#[derive(Debug, Deserialize)]
struct Registry {
    #[serde(default)]
    validators: Vec<ValidatorEntry>,
    #[serde(default)]
    bft_config: Option<BftConfig>,
}

/// A set of trusted raw Ed25519 public keys.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: HashSet<[u8; 32]>,
    validators: Vec<ValidatorEntry>,
    bft: Option<BftConfig>,
}

impl TrustStore {
    /// A store holding exactly `keys`.
    pub fn from_keys(keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        TrustStore {
            keys: keys.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Loads every `*.pem` / `*.pub` / `*.hex` file of `dir` and, if present,
    /// `validator_registry.json`. Fails closed: one unreadable key fails the whole load.
    pub fn from_dir(dir: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut store = TrustStore::default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for path in files {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "pem" | "pub" | "hex") {
                store.add_key_file(&path)?;
            }
        }
        let registry = dir.join(REGISTRY_FILE);
        if registry.exists() {
            store.load_registry(&registry, dir)?;
        }
        Ok(store)
    }

    /// Adds one key file (PEM SPKI or hex).
    pub fn add_key_file(&mut self, path: &Path) -> Result<(), TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let key = keys::parse_public_key_bytes(&text)
            .and_then(keys::check_trusted_key)
            .map_err(|detail| KeyError::Invalid {
                what: path.display().to_string(),
                detail,
            })?;
        self.keys.insert(key);
        Ok(())
    }

    /// A store from PEM files, directories (each with an optional `validator_registry.json`)
    /// and 64-hex-character keys, as `--trust` and the reloader take them. Fails closed,
    /// naming the file or item at fault.
    pub fn load(items: &[String]) -> Result<TrustStore, TrustError> {
        let mut store = TrustStore::default();
        for item in items {
            let p = Path::new(item);
            if p.is_dir() {
                let dir = TrustStore::from_dir(p)?;
                store.keys.extend(dir.keys);
                store.validators.extend(dir.validators);
                store.bft = store.bft.or(dir.bft);
            } else if p.is_file() {
                store.add_key_file(p)?;
            } else {
                let key = keys::decode_hex32(item)
                    .map_err(|e| e.to_string())
                    .and_then(keys::check_trusted_key)
                    .map_err(|detail| KeyError::Invalid {
                        what: item.clone(),
                        detail: format!("not a file, directory or 64-hex-character key ({detail})"),
                    })?;
                store.keys.insert(key);
            }
        }
        Ok(store)
    }

    /// A store from the text of a `validator_registry.json` whose relative key paths are
    /// under `dir` (the registry parser, on its own for fuzzing).
    pub fn from_registry_json(text: &str, dir: &Path) -> Result<TrustStore, TrustError> {
        let mut store = TrustStore::default();
        store.registry_from_str(text, &dir.join(REGISTRY_FILE), dir)?;
        Ok(store)
    }

    fn load_registry(&mut self, path: &Path, dir: &Path) -> Result<(), TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.registry_from_str(&text, path, dir)
    }

    fn registry_from_str(&mut self, text: &str, path: &Path, dir: &Path) -> Result<(), TrustError> {
        let reg: Registry = serde_json::from_str(text).map_err(|e| TrustError::Registry {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        for v in &reg.validators {
            if let Some(h) = &v.public_key_hex {
                let key = keys::decode_hex32(h)
                    .map_err(|e| e.to_string())
                    .and_then(keys::check_trusted_key)
                    .map_err(|detail| TrustError::Registry {
                        path: path.to_path_buf(),
                        detail: format!("validator {}: {detail}", v.node_id),
                    })?;
                self.keys.insert(key);
            }
            if let Some(p) = &v.public_key_path {
                let p = Path::new(p);
                let full = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                };
                self.add_key_file(&full)?;
            }
            if v.public_key_hex.is_none() && v.public_key_path.is_none() {
                return Err(TrustError::Registry {
                    path: path.to_path_buf(),
                    detail: format!("validator {} has no public key", v.node_id),
                });
            }
        }
        self.validators = reg.validators;
        self.bft = reg.bft_config;
        Ok(())
    }

    /// Adds a raw key.
    pub fn insert(&mut self, key: [u8; 32]) {
        self.keys.insert(key);
    }

    /// True if `key` is trusted.
    pub fn contains(&self, key: &[u8]) -> bool {
        <[u8; 32]>::try_from(key).is_ok_and(|k| self.keys.contains(&k))
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Iterates over the trusted keys.
    pub fn keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter()
    }

    /// Validators listed by the registry, if one was loaded.
    pub fn validators(&self) -> &[ValidatorEntry] {
        &self.validators
    }

    /// BFT parameters from the registry, if any.
    pub fn bft_config(&self) -> Option<BftConfig> {
        self.bft
    }
}

/// Parses a policy allowlist (SPEC 3d, `AI_POLICY_ALLOWED_PUBKEYS`): 64-hex-character keys
/// separated by commas, spaces or newlines, `#` starting a comment. `what` names the source
/// (the variable or the file) in errors; weak (small-order) keys are refused.
pub fn parse_allowlist(text: &str, what: &str) -> Result<HashSet<[u8; 32]>, KeyError> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|k| !k.is_empty())
        .map(|k| {
            let bad = |detail: String| KeyError::Invalid {
                what: what.to_string(),
                detail: format!("{k}: {detail}"),
            };
            let raw = super::keys::decode_hex32(k).map_err(|e| bad(e.to_string()))?;
            super::keys::check_trusted_key(raw).map_err(bad)
        })
        .collect()
}

/// The largest allowlist file read (about 7,000 keys).
pub(crate) const MAX_ALLOWLIST_BYTES: u64 = 512 * 1024;

/// Loads a policy allowlist file (`AI_POLICY_ALLOWED_PUBKEYS_FILE`, at most
/// [`MAX_ALLOWLIST_BYTES`]): see [`parse_allowlist`].
pub(crate) fn load_allowlist(path: &Path) -> Result<HashSet<[u8; 32]>, TrustError> {
    use std::io::Read as _;
    let io = |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_ALLOWLIST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_ALLOWLIST_BYTES {
        return Err(TrustError::Registry {
            path: path.to_path_buf(),
            detail: format!("over {MAX_ALLOWLIST_BYTES} bytes"),
        });
    }
    Ok(parse_allowlist(&text, &path.display().to_string())?)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_allowlist_takes_commas_spaces_newlines_and_comments_and_refuses_weak_keys() {
        let k1 = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        let k2 = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[2; 32])
                .verifying_key()
                .to_bytes(),
        );
        let got = parse_allowlist(&format!("# keys\n{k1}, {k2}\n\n{k1} # again\n"), "f").unwrap();
        assert_eq!(got.len(), 2);
        assert!(parse_allowlist("", "f").unwrap().is_empty());
        // The identity point is small-order: refused, naming the source.
        let weak = format!("01{}", "00".repeat(31));
        let e = parse_allowlist(&format!("{k1},{weak}"), "allow.txt").unwrap_err();
        assert!(e.to_string().contains("allow.txt"), "{e}");
        assert!(parse_allowlist(&format!("{k1} zz"), "f").is_err());
    }

    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn small_order_keys_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // The identity point (small order): y = 1.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let path = dir.path().join("weak.hex");
        std::fs::write(&path, hex::encode(weak)).unwrap();
        let e = TrustStore::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("weak.hex") && e.contains("small-order"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            format!(
                r#"{{"validators":[{{"node_id":3,"public_key_hex":"{}"}}]}}"#,
                hex::encode(weak)
            ),
        )
        .unwrap();
        let e = TrustStore::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(REGISTRY_FILE) && e.contains("validator 3") && e.contains("small-order"),
            "{e}"
        );
    }

    #[test]
    fn loads_pem_hex_and_registry() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2; 32]).verifying_key();
        let c = SigningKey::from_bytes(&[3; 32]).verifying_key();
        std::fs::write(dir.path().join("a.pem"), keys::public_key_pem(&a).unwrap()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/c.key"),
            keys::public_key_pem(&c).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            format!(
                r#"{{"validators":[{{"node_id":1,"public_key_hex":"{}"}},{{"node_id":2,"public_key_path":"sub/c.key"}}],
                   "bft_config":{{"total_validators":4,"quorum_size":3}}}}"#,
                hex::encode(b.to_bytes())
            ),
        )
        .unwrap();
        let t = TrustStore::from_dir(dir.path()).unwrap();
        assert_eq!(t.len(), 3);
        assert!(
            t.contains(&a.to_bytes()) && t.contains(&b.to_bytes()) && t.contains(&c.to_bytes())
        );
        assert!(!t.contains(&[0u8; 32]));
        assert_eq!(t.bft_config().unwrap().quorum_size, 3);
        assert_eq!(t.validators().len(), 2);
    }

    #[test]
    fn bad_key_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.pem"),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(TrustStore::from_dir(dir.path()).is_err());
    }
}
