//! `meshbus sign` and `meshbus verify`: no broker, same contract code as the library.

use super::{kind_of, read_input, signing_key, trust_store, CliResult, Exit};
use meshbus::contract::{json, FixedClock, Kind, Signer, SystemClock, Verifier};
use meshbus::contract::{ACK_SIGNATURE_ALG_HEADER, ACK_SIGNATURE_HEADER};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Message kind (anomaly, evidence, policy, commit, policy_update, reputation,
    /// evidence_request, policy_ack).
    #[arg(long)]
    pub kind: Kind,
    /// Signing key (PKCS#8 PEM, raw seed or hex).
    #[arg(long)]
    pub key: PathBuf,
    /// Node id written into nonces.
    #[arg(long, default_value_t = 0, env = "NODE_ID")]
    pub node_id: u32,
    /// Sign as if at this Unix time (seconds), for fixtures.
    #[arg(long)]
    pub now: Option<i64>,
    /// Write the record here instead of stdout.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Write hex text instead of binary.
    #[arg(long)]
    pub hex: bool,
    /// The message as proto3 JSON (`-` or none: stdin).
    pub input: Option<PathBuf>,
}

/// Signs a JSON message and writes the record.
pub(crate) fn sign(a: SignArgs) -> CliResult {
    let text = String::from_utf8(read_input(a.input.as_deref())?)
        .map_err(|_| "the message JSON is not UTF-8".to_string())?;
    let message = json::from_json(a.kind, &text).map_err(|e| e.to_string())?;
    let key = signing_key(&a.key)?;
    let clock: Arc<dyn meshbus::contract::Clock> = match a.now {
        Some(s) => Arc::new(FixedClock::at_secs(s)),
        None => Arc::new(SystemClock),
    };
    let (domains, _) = meshbus::config::Config::contract_from_env().map_err(|e| e.to_string())?;
    let signer = Signer::with_clock(key, a.node_id, domains, clock);
    let signed = signer.sign_message(message);
    let bytes = signed.encode();
    if a.kind == Kind::PolicyAck {
        // A policy ack's signature travels in record headers (SPEC 3c).
        eprintln!(
            "{ACK_SIGNATURE_HEADER}: {}",
            hex::encode(signer.sign_raw(&bytes))
        );
    }
    let out = if a.hex {
        format!("{}\n", hex::encode(&bytes)).into_bytes()
    } else {
        bytes
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, out).map_err(|e| format!("cannot write {}: {e}", p.display()))?
        }
        None => std::io::stdout()
            .write_all(&out)
            .map_err(|e| format!("cannot write stdout: {e}"))?,
    }
    Ok(Exit::Ok)
}

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Message kind.
    #[arg(long, conflicts_with = "topic")]
    pub kind: Option<Kind>,
    /// Topic the record came from (its kind is looked up).
    #[arg(long)]
    pub topic: Option<String>,
    /// Check against this Unix time (seconds) instead of now, for archived records.
    #[arg(long)]
    pub now: Option<i64>,
    /// Trusted control key: a PEM file, a directory of them, or 64 hex characters (repeatable).
    #[arg(long)]
    pub trust: Vec<String>,
    /// Trusted policy-ack signer (same forms as --trust; repeatable).
    #[arg(long)]
    pub ack_key: Vec<String>,
    /// The `ack-signature` header of a policy ack, in hex.
    #[arg(long)]
    pub ack_signature: Option<String>,
    /// The input is hex text.
    #[arg(long)]
    pub hex: bool,
    /// Print a JSON object (with the decoded message when it verifies).
    #[arg(long)]
    pub json: bool,
    /// The record (`-` or none: stdin).
    pub input: Option<PathBuf>,
}

/// Verifies one record; exit 0 when it verifies, 1 when refused.
pub(crate) fn verify(a: VerifyArgs) -> CliResult {
    let kind = kind_of(a.kind, a.topic.as_deref())?;
    let raw = read_input(a.input.as_deref())?;
    let record = if a.hex {
        let text = String::from_utf8(raw).map_err(|_| "hex input is not text".to_string())?;
        hex::decode(text.trim()).map_err(|e| format!("bad hex input: {e}"))?
    } else {
        raw
    };
    // Skews, the policy allowlist and signing domains come from the environment (SPEC 8).
    let (domains, settings) =
        meshbus::config::Config::contract_from_env().map_err(|e| e.to_string())?;
    let mut config = meshbus::config::verifier_config(&domains, &settings);
    if !a.ack_key.is_empty() {
        config.ack_keys = Some(trust_store(&a.ack_key)?);
    }
    let trust = trust_store(&a.trust)?;
    let verifier = match a.now {
        Some(s) => Verifier::with_clock(config, trust, Arc::new(FixedClock::at_secs(s))),
        None => Verifier::new(config, trust),
    };
    let mut headers = BTreeMap::new();
    if let Some(sig) = &a.ack_signature {
        let sig = hex::decode(sig).map_err(|e| format!("bad --ack-signature: {e}"))?;
        headers.insert(ACK_SIGNATURE_HEADER.to_string(), sig);
        headers.insert(ACK_SIGNATURE_ALG_HEADER.to_string(), b"ed25519".to_vec());
    }
    match verifier.verify_record(kind, &record, &headers) {
        Ok(message) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "kind": kind.name(), "message": json::to_json(&message)})
                );
            } else {
                println!("ok");
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "kind": kind.name(), "reason": e.reason.code(), "detail": e.detail})
                );
            } else {
                println!("{}", e.reason.code());
                eprintln!("{}", e.detail);
            }
            Ok(Exit::Refused)
        }
    }
}
