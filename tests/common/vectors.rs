//! Loads `../shared/vectors/contract_vectors.json` (or `$MESHBUS_VECTORS`) at test time.
#![allow(dead_code)]

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
pub struct Vectors {
    pub now: i64,
    pub keys: Keys,
    pub trusted_control_keys: Vec<String>,
    pub vectors: Vec<Vector>,
    pub sequences: Vec<Sequence>,
}

#[derive(Debug, Deserialize)]
pub struct Keys {
    pub ai_producer_seed_hex: String,
    pub ai_producer_pubkey_hex: String,
    pub other_seed_hex: String,
    pub other_pubkey_hex: String,
    pub control_signer_seed_hex: String,
    pub control_signer_pubkey_hex: String,
}

#[derive(Debug, Deserialize)]
pub struct Vector {
    pub name: String,
    pub kind: String,
    pub topic: String,
    pub record_hex: String,
    pub expect: String,
    pub sign_bytes_hex: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Sequence {
    pub name: String,
    pub kind: String,
    pub topic: String,
    pub records_hex: Vec<String>,
    pub expect: Vec<String>,
}

pub fn path() -> PathBuf {
    std::env::var_os("MESHBUS_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/vectors/contract_vectors.json")
        })
}

pub fn load() -> Vectors {
    let p = path();
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("contract vectors not readable at {}: {e}", p.display()));
    serde_json::from_str(&text).expect("contract vectors parse")
}

pub fn seed(hex_str: &str) -> ed25519_dalek::SigningKey {
    let mut s = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut s).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&s)
}
