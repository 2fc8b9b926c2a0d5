//! The CyberMesh messages (SPEC.md section 2): the [`Message`] enum the per-kind table's rows
//! expand into here (`kind_messages`), its encoding, decoding and record keys, and the
//! accessors of each family ([`AiEnvelope`], [`ControlSigned`]) the signer and verifier share.

use super::checks::sha256;
use super::kinds::rows_for;
pub(crate) use super::kinds::Kind;

pub use super::proto::ai::{AnomalyEvent, ChainOfCustodyEntry, EvidenceEvent, PolicyEvent};
pub use super::proto::control::{
    CommitEvent, EvidenceRequestEvent, PolicyAckEvent, PolicyUpdateEvent, ReputationEvent,
};
use super::wire::{GoDecode, RecordBytes};

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

/// [`AiEnvelope`] for an `ai.*` message whose content field is `$content`.
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
                self.content_hash = content_hash.into();
                self.producer_id = key.to_vec().into();
                self.pubkey = key.to_vec().into();
                self.nonce = nonce.to_vec().into();
                self.alg = ALG_ED25519.to_string();
            }
            fn set_signature(&mut self, signature: Vec<u8>) {
                self.signature = signature.into();
            }
            fn into_message(self) -> Message {
                Message::$variant(self)
            }
        }
    };
}

/// [`ControlSigned`] for a `control.*` message; `$prepare` fills derived fields.
macro_rules! control_signed {
    ($ty:ty, $kind:expr, $domain:expr, $variant:ident, |$m:ident| $prepare:block) => {
        impl ControlSigned for $ty {
            const KIND: Kind = $kind;
            const DOMAIN: &'static [u8] = $domain;
            fn fill_derived(&mut self) {
                let $m = self;
                $prepare
            }
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
                self.producer_id = key.to_vec().into();
            }
            fn set_signature_fields(&mut self, signature: Vec<u8>, pubkey: Vec<u8>, alg: String) {
                self.signature = signature.into();
                self.pubkey = pubkey.into();
                self.alg = alg;
            }
            fn into_message(self) -> Message {
                Message::$variant(self)
            }
        }
    };
}

/// The rows' message part: [`Message`], its accessors, [`KindOf`] for every message type,
/// and each family's accessors ([`AiEnvelope`], [`ControlSigned`]).
macro_rules! kind_messages {
    ( $(
        [$(#[$doc:meta])*] $variant:ident $ty:ident $snake:ident $proto:literal
        $topic:literal $topic_env:literal (|$km:ident| $key:expr) ($($structure:tt)*)
        $family:ident { $($fam:tt)* }
    )* ) => {
        /// A verified (or to-be-sent) message of any kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Message {
            /// The message's kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $( Message::$variant(_) => Kind::$variant, )*
                }
            }

            /// Canonical protobuf encoding (ascending field numbers, defaults omitted).
            pub fn encode(&self) -> Vec<u8> {
                use prost::Message as _;
                match self {
                    $( Message::$variant(m) => m.encode_to_vec(), )*
                }
            }

            /// Decodes `bytes` as a message of `kind` (no verification), as protobuf-go
            /// does: see [`GoDecode`](super::wire::GoDecode) and [`RecordBytes`].
            pub fn decode(kind: Kind, bytes: impl RecordBytes) -> Result<Message, prost::DecodeError> {
                Ok(match kind {
                    $( Kind::$variant => Message::$variant(<$ty>::go_decode(bytes)?), )*
                })
            }

            /// The Kafka record key of SPEC.md section 1 (the table's key rule).
            pub fn record_key(&self) -> Option<Vec<u8>> {
                match self {
                    $( Message::$variant($km) => $key, )*
                }
            }

            /// `(producer_id, nonce)` of an `ai.*` message, what the replay guard remembers
            /// (SPEC 3e); `None` for the other families.
            pub fn replay_key(&self) -> Option<(&[u8], &[u8])> {
                match self {
                    $( Message::$variant(m) => kind_messages!(@replay_key $family m), )*
                }
            }

            /// The message with its signature fields cleared (control: `signature`, `pubkey`
            /// and `alg`, which SPEC 3b clears before signing; ai: `signature`).
            pub fn unsigned(&self) -> Message {
                match self {
                    $( Message::$variant(m) => {
                        #[allow(unused_mut)]
                        let mut m = m.clone();
                        kind_messages!(@clear $family m);
                        Message::$variant(m)
                    } )*
                }
            }
        }

        $(
            impl KindOf for $ty {
                const KIND: Kind = Kind::$variant;

                fn from_message(m: Message) -> Result<Self, Message> {
                    match m {
                        Message::$variant(m) => Ok(m),
                        #[allow(unreachable_patterns)]
                        other => Err(other),
                    }
                }

                fn into_message(self) -> Message {
                    Message::$variant(self)
                }
            }
        )*

        $( kind_messages!(@impl $family $variant $ty { $($fam)* }); )*
    };

    (@replay_key ai $m:ident) => { Some((AiEnvelope::producer_id($m), AiEnvelope::nonce($m))) };
    (@replay_key control $m:ident) => {{
        let _ = $m;
        None
    }};
    (@replay_key ack $m:ident) => {{
        let _ = $m;
        None
    }};

    (@clear ai $m:ident) => { $m.set_signature(Vec::new()) };
    (@clear control $m:ident) => { $m.set_signature_fields(Vec::new(), Vec::new(), String::new()) };
    (@clear ack $m:ident) => {};

    (@impl ai $variant:ident $ty:ident {
        domain: $d:literal,
        content: $content:ident,
        $($rest:tt)*
    }) => {
        ai_envelope!($ty, Kind::$variant, $content, $variant);
    };
    (@impl control $variant:ident $ty:ident {
        domain: $d:literal or $e:literal,
        prepare: |$pm:ident| $prepare:block,
        $($rest:tt)*
    }) => {
        control_signed!($ty, Kind::$variant, $d, $variant, |$pm| $prepare);
    };
    (@impl ack $variant:ident $ty:ident {}) => {};
}

crate::kind_rows!(rows_for; kind_messages);
