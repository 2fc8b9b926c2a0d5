//! The CyberMesh messages (SPEC.md section 2), their kinds and default topics, and the
//! accessors the signer and verifier share.

use super::kinds::{Family, KindSpec, KINDS};
pub use super::kinds::{Kind, Message};
use std::fmt;
use std::str::FromStr;

pub use super::proto::ai::{AnomalyEvent, ChainOfCustodyEntry, EvidenceEvent, PolicyEvent};
pub use super::proto::control::{
    CommitEvent, EvidenceRequestEvent, PolicyAckEvent, PolicyUpdateEvent, ReputationEvent,
};
use super::wire::GoDecode;

/// A message type of exactly one kind (every type of the per-kind table): what typed
/// handlers and streams are keyed by, so the kind follows from the type.
pub trait KindOf: Sized + Send + 'static {
    /// Its kind.
    const KIND: Kind;

    /// The typed message inside `m`, or `m` back if it is of another kind (given back whole,
    /// not an error value: hence the large `Err`).
    #[allow(clippy::result_large_err)]
    fn from_message(m: Message) -> Result<Self, Message>;

    /// The message as a [`Message`].
    fn into_message(self) -> Message;
}

/// The `alg` value every signed message carries.
pub const ALG_ED25519: &str = "Ed25519";

impl Kind {
    /// This kind's row of the per-kind table.
    pub fn spec(self) -> &'static KindSpec {
        &KINDS[self as usize]
    }

    /// The short name used by the CLI, the vectors and the `type` metric label.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The protobuf message's full name.
    pub fn proto_name(self) -> &'static str {
        self.spec().proto_name
    }

    /// The default topic of SPEC.md section 1.
    pub fn default_topic(self) -> &'static str {
        self.spec().default_topic
    }

    /// The environment variable overriding this kind's topic.
    pub fn topic_env(self) -> &'static str {
        self.spec().topic_env
    }

    /// True for the AI-signed envelope kinds (SPEC 3a).
    pub fn is_ai(self) -> bool {
        self.spec().family == Family::Ai
    }

    /// The kind whose default topic is `topic`, if any.
    pub fn from_default_topic(topic: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.default_topic() == topic)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message kind or topic `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    /// Accepts a kind name (`anomaly`, `policy_update`, also with `-`) or a default topic.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.replace('-', "_");
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .or_else(|| Kind::from_default_topic(s))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// The AI envelope of SPEC 3a: the fields the signer fills and the verifier checks.
pub trait AiEnvelope: GoDecode + Clone {
    /// The kind (selects the signing domain).
    const KIND: Kind;
    /// The hashed content (payload, proof_blob or params).
    fn content(&self) -> &[u8];
    /// Unix seconds.
    fn ts(&self) -> i64;
    /// SHA-256 of the content as carried.
    fn content_hash(&self) -> &[u8];
    /// Raw producer public key.
    fn producer_id(&self) -> &[u8];
    /// 16-byte nonce.
    fn nonce(&self) -> &[u8];
    /// 64-byte signature.
    fn signature(&self) -> &[u8];
    /// Raw signing public key.
    fn pubkey(&self) -> &[u8];
    /// Algorithm name.
    fn alg(&self) -> &str;
    /// Fills every envelope field but the signature.
    fn set_envelope(&mut self, ts: i64, content_hash: Vec<u8>, key: [u8; 32], nonce: [u8; 16]);
    /// Stores the signature.
    fn set_signature(&mut self, signature: Vec<u8>);
    /// Wraps into [`Message`].
    fn into_message(self) -> Message;
}

/// A backend-signed control message (SPEC 3b).
pub trait ControlSigned: GoDecode + Clone {
    /// The kind.
    const KIND: Kind;
    /// The signing domain prefix.
    const DOMAIN: &'static [u8];
    /// Unix seconds.
    fn timestamp(&self) -> i64;
    /// Raw producer public key.
    fn producer_id(&self) -> &[u8];
    /// 64-byte signature.
    fn signature(&self) -> &[u8];
    /// Raw signing public key.
    fn pubkey(&self) -> &[u8];
    /// Algorithm name.
    fn alg(&self) -> &str;
    /// Sets the timestamp.
    fn set_timestamp(&mut self, ts: i64);
    /// Fills fields derived from others before signing (policy update `rule_hash`).
    fn fill_derived(&mut self) {}
    /// Sets producer_id (the body field that is signed).
    fn set_producer_id(&mut self, key: [u8; 32]);
    /// Sets signature, pubkey and alg (the fields cleared before signing).
    fn set_signature_fields(&mut self, signature: Vec<u8>, pubkey: Vec<u8>, alg: String);
    /// Wraps into [`Message`].
    fn into_message(self) -> Message;
}
