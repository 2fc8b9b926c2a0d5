//! The CyberMesh messages (SPEC.md section 2), their kinds and default topics, and the
//! accessors the signer and verifier share.

use super::kinds::{Family, KeyRule, KindSpec, KINDS};
use super::proto::{ai, control};
use std::fmt;
use std::str::FromStr;

pub use ai::{AnomalyEvent, ChainOfCustodyEntry, EvidenceEvent, PolicyEvent};
pub use control::{
    CommitEvent, EvidenceRequestEvent, PolicyAckEvent, PolicyUpdateEvent, ReputationEvent,
};

/// The `alg` value every signed message carries.
pub const ALG_ED25519: &str = "Ed25519";

/// Which CyberMesh message a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `cybermesh.ai.v1.AnomalyEvent` on `ai.anomalies.v1`.
    Anomaly,
    /// `cybermesh.ai.v1.EvidenceEvent` on `ai.evidence.v1`.
    Evidence,
    /// `cybermesh.ai.v1.PolicyEvent` on `ai.policy.v1`.
    Policy,
    /// `cybermesh.control.v1.CommitEvent` on `control.commits.v1`.
    Commit,
    /// `cybermesh.control.v1.PolicyUpdateEvent` on `control.policy.v1`.
    PolicyUpdate,
    /// `cybermesh.control.v1.ReputationEvent` on `control.reputation.v1`.
    Reputation,
    /// `cybermesh.control.v1.EvidenceRequestEvent` on `control.evidence.v1`.
    EvidenceRequest,
    /// `cybermesh.control.v1.PolicyAckEvent` on `control.policy.ack.v1`.
    PolicyAck,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Anomaly,
        Kind::Evidence,
        Kind::Policy,
        Kind::Commit,
        Kind::PolicyUpdate,
        Kind::Reputation,
        Kind::EvidenceRequest,
        Kind::PolicyAck,
    ];

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

/// A verified (or to-be-sent) message of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An anomaly.
    Anomaly(AnomalyEvent),
    /// Evidence.
    Evidence(EvidenceEvent),
    /// A policy proposal.
    Policy(PolicyEvent),
    /// A block commit.
    Commit(CommitEvent),
    /// A policy update.
    PolicyUpdate(PolicyUpdateEvent),
    /// A reputation update.
    Reputation(ReputationEvent),
    /// An evidence request.
    EvidenceRequest(EvidenceRequestEvent),
    /// A policy acknowledgement.
    PolicyAck(PolicyAckEvent),
}

impl Message {
    /// The message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Anomaly(_) => Kind::Anomaly,
            Message::Evidence(_) => Kind::Evidence,
            Message::Policy(_) => Kind::Policy,
            Message::Commit(_) => Kind::Commit,
            Message::PolicyUpdate(_) => Kind::PolicyUpdate,
            Message::Reputation(_) => Kind::Reputation,
            Message::EvidenceRequest(_) => Kind::EvidenceRequest,
            Message::PolicyAck(_) => Kind::PolicyAck,
        }
    }

    /// Canonical protobuf encoding (ascending field numbers, defaults omitted).
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message as _;
        match self {
            Message::Anomaly(m) => m.encode_to_vec(),
            Message::Evidence(m) => m.encode_to_vec(),
            Message::Policy(m) => m.encode_to_vec(),
            Message::Commit(m) => m.encode_to_vec(),
            Message::PolicyUpdate(m) => m.encode_to_vec(),
            Message::Reputation(m) => m.encode_to_vec(),
            Message::EvidenceRequest(m) => m.encode_to_vec(),
            Message::PolicyAck(m) => m.encode_to_vec(),
        }
    }

    /// Decodes `bytes` as a message of `kind` (no verification).
    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Message, prost::DecodeError> {
        use prost::Message as _;
        Ok(match kind {
            Kind::Anomaly => Message::Anomaly(AnomalyEvent::decode(bytes)?),
            Kind::Evidence => Message::Evidence(EvidenceEvent::decode(bytes)?),
            Kind::Policy => Message::Policy(PolicyEvent::decode(bytes)?),
            Kind::Commit => Message::Commit(CommitEvent::decode(bytes)?),
            Kind::PolicyUpdate => Message::PolicyUpdate(PolicyUpdateEvent::decode(bytes)?),
            Kind::Reputation => Message::Reputation(ReputationEvent::decode(bytes)?),
            Kind::EvidenceRequest => Message::EvidenceRequest(EvidenceRequestEvent::decode(bytes)?),
            Kind::PolicyAck => Message::PolicyAck(PolicyAckEvent::decode(bytes)?),
        })
    }

    /// The Kafka record key of SPEC.md section 1: commit height as 8 bytes big-endian,
    /// `policy_id` for policy updates and acks, none otherwise.
    pub fn record_key(&self) -> Option<Vec<u8>> {
        match (self.kind().spec().key, self) {
            (KeyRule::Height, Message::Commit(m)) => Some(m.height.to_be_bytes().to_vec()),
            (KeyRule::PolicyId, Message::PolicyUpdate(m)) => Some(m.policy_id.as_bytes().to_vec()),
            (KeyRule::PolicyId, Message::PolicyAck(m)) => Some(m.policy_id.as_bytes().to_vec()),
            _ => None,
        }
    }
}

/// The AI envelope of SPEC 3a: the fields the signer fills and the verifier checks.
pub trait AiEnvelope: prost::Message + Default + Clone {
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

macro_rules! ai_envelope {
    ($ty:ty, $kind:expr, $content:ident, $variant:ident) => {
        impl AiEnvelope for $ty {
            const KIND: Kind = $kind;
            fn content(&self) -> &[u8] {
                &self.$content
            }
            fn ts(&self) -> i64 {
                self.ts
            }
            fn content_hash(&self) -> &[u8] {
                &self.content_hash
            }
            fn producer_id(&self) -> &[u8] {
                &self.producer_id
            }
            fn nonce(&self) -> &[u8] {
                &self.nonce
            }
            fn signature(&self) -> &[u8] {
                &self.signature
            }
            fn pubkey(&self) -> &[u8] {
                &self.pubkey
            }
            fn alg(&self) -> &str {
                &self.alg
            }
            fn set_envelope(
                &mut self,
                ts: i64,
                content_hash: Vec<u8>,
                key: [u8; 32],
                nonce: [u8; 16],
            ) {
                self.ts = ts;
                self.content_hash = content_hash;
                self.producer_id = key.to_vec();
                self.pubkey = key.to_vec();
                self.nonce = nonce.to_vec();
                self.alg = ALG_ED25519.to_string();
            }
            fn set_signature(&mut self, signature: Vec<u8>) {
                self.signature = signature;
            }
            fn into_message(self) -> Message {
                Message::$variant(self)
            }
        }
    };
}

ai_envelope!(AnomalyEvent, Kind::Anomaly, payload, Anomaly);
ai_envelope!(EvidenceEvent, Kind::Evidence, proof_blob, Evidence);
ai_envelope!(PolicyEvent, Kind::Policy, params, Policy);

/// A backend-signed control message (SPEC 3b).
pub trait ControlSigned: prost::Message + Default + Clone {
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

macro_rules! control_signed {
    ($ty:ty, $kind:expr, $domain:expr, $variant:ident) => {
        control_signed!($ty, $kind, $domain, $variant, |_m| {});
    };
    ($ty:ty, $kind:expr, $domain:expr, $variant:ident, |$m:ident| $derive:block) => {
        impl ControlSigned for $ty {
            fn fill_derived(&mut self) {
                let $m = self;
                $derive
            }
            const KIND: Kind = $kind;
            const DOMAIN: &'static [u8] = $domain;
            fn timestamp(&self) -> i64 {
                self.timestamp
            }
            fn producer_id(&self) -> &[u8] {
                &self.producer_id
            }
            fn signature(&self) -> &[u8] {
                &self.signature
            }
            fn pubkey(&self) -> &[u8] {
                &self.pubkey
            }
            fn alg(&self) -> &str {
                &self.alg
            }
            fn set_timestamp(&mut self, ts: i64) {
                self.timestamp = ts;
            }
            fn set_producer_id(&mut self, key: [u8; 32]) {
                self.producer_id = key.to_vec();
            }
            fn set_signature_fields(&mut self, signature: Vec<u8>, pubkey: Vec<u8>, alg: String) {
                self.signature = signature;
                self.pubkey = pubkey;
                self.alg = alg;
            }
            fn into_message(self) -> Message {
                Message::$variant(self)
            }
        }
    };
}

control_signed!(CommitEvent, Kind::Commit, b"control.commits.v1", Commit);
control_signed!(
    PolicyUpdateEvent,
    Kind::PolicyUpdate,
    b"control.policy.v1",
    PolicyUpdate,
    |m| {
        if m.rule_hash.is_empty() {
            m.rule_hash = super::signing::sha256(&m.rule_data).to_vec();
        }
    }
);
control_signed!(
    ReputationEvent,
    Kind::Reputation,
    b"control.reputation.v1",
    Reputation
);
control_signed!(
    EvidenceRequestEvent,
    Kind::EvidenceRequest,
    b"control.evidence.v1",
    EvidenceRequest
);
