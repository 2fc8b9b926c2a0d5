//! The machinery that turns the per-kind table ([`super::kinds`]) into code: the [`Kind`]
//! and [`Message`] enums, the table's data rows, encoding and decoding, record keys, the
//! signing and verification dispatch, and each kind's family traits ([`AiEnvelope`] +
//! [`AiChecks`], or [`ControlSigned`] + [`ControlChecks`]). Nothing here names a kind: adding
//! one is a proto message, a table row and a fuzz target.
//!
//! [`Kind`]: super::Kind
//! [`Message`]: super::Message
//! [`AiEnvelope`]: super::AiEnvelope
//! [`AiChecks`]: super::verify::AiChecks
//! [`ControlSigned`]: super::ControlSigned
//! [`ControlChecks`]: super::verify::ControlChecks

/// Expands the rows of `kind_rows!` (see `contract/kinds.rs` for the row grammar).
macro_rules! expand_kinds {
    ( $(
        $(#[$doc:meta])*
        $variant:ident($ty:ident) $snake:ident {
            sample: |$sn:ident, $ss:ident| $sample:block,
            summary: |$summ:ident| $summary:expr,
            proto: $proto:literal,
            topic: $topic:literal or $topic_env:literal,
            key: |$km:ident| $key:expr,
            structure: |$sm:ident| $structure:block,
            family: $family:ident { $($fam:tt)* } $(,)?
        }
    ),* $(,)? ) => {
        const COUNT: usize = [$(stringify!($variant)),*].len();

        /// Which CyberMesh message a record holds: one variant per row of the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $( $(#[$doc])* $variant, )*
        }

        impl Kind {
            /// Every kind, in table order.
            pub const ALL: [Kind; COUNT] = [$(Kind::$variant),*];
        }

        /// The table's data, one row per kind, in [`Kind::ALL`] order.
        pub static KINDS: [KindSpec; COUNT] = [$(
            KindSpec {
                kind: Kind::$variant,
                name: stringify!($snake),
                proto_name: $proto,
                default_topic: $topic,
                topic_env: $topic_env,
                domain: expand_kinds!(@domain $family { $($fam)* }),
                domain_env: expand_kinds!(@domain_env $family { $($fam)* }),
                family: expand_kinds!(@family $family),
            }
        ),*];

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
            /// does: see [`GoDecode`](super::wire::GoDecode).
            pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Message, prost::DecodeError> {
                use super::wire::GoDecode as _;
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
                    $( Message::$variant(m) => expand_kinds!(@replay_key $family m), )*
                }
            }

            /// The bytes its signature covers as it stands (SPEC 3a, or 3b under `domains`);
            /// `None` for a kind signed in record headers (policy acks, SPEC 3c).
            pub fn sign_bytes(&self, domains: &SigningDomains) -> Option<Vec<u8>> {
                match self {
                    $( Message::$variant(m) => expand_kinds!(@sign_bytes $family $ty m domains), )*
                }
            }
        }

        impl Message {
            /// The message with its signature fields cleared (control: `signature`, `pubkey`
            /// and `alg`, which SPEC 3b clears before signing; ai: `signature`).
            pub fn unsigned(&self) -> Message {
                match self {
                    $( Message::$variant(m) => {
                        #[allow(unused_mut)]
                        let mut m = m.clone();
                        expand_kinds!(@clear $family m);
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

        /// Signs by family: the AI envelope, the canonical control signature, or nothing.
        pub(crate) fn sign_message(signer: &Signer, m: Message, fill: bool) -> Message {
            match m {
                $( Message::$variant(m) =>
                    Message::$variant(expand_kinds!(@sign $family signer m fill)), )*
            }
        }

        /// Verifies a record of `kind` by its family's path, up to (not including) the replay
        /// check of `ai.*` (SPEC 4 step 9), which the verifier applies to every family alike.
        pub(crate) fn verify_kind(
            v: &Verifier,
            kind: Kind,
            value: &[u8],
            headers: &BTreeMap<String, Vec<u8>>,
        ) -> Result<Message, VerifyError> {
            Ok(match kind {
                $( Kind::$variant => expand_kinds!(
                    @verify $family $variant $ty v value headers |$sm| $structure
                ), )*
            })
        }

        $( expand_kinds!(@impl $family $variant $ty |$sm| $structure { $($fam)* }); )*
    };

    (@family ai) => { Family::Ai };
    (@family control) => { Family::Control };
    (@family ack) => { Family::Ack };

    (@domain ai { domain: $d:literal, $($rest:tt)* }) => { $d };
    (@domain control { domain: $d:literal or $e:literal, $($rest:tt)* }) => { $d };
    (@domain ack {}) => { b"" };
    (@domain_env ai { $($rest:tt)* }) => { None };
    (@domain_env control { domain: $d:literal or $e:literal, $($rest:tt)* }) => { Some($e) };
    (@domain_env ack {}) => { None };

    (@sign_bytes ai $ty:ident $m:ident $d:ident) => { Some(ai_message_sign_bytes($m)) };
    (@sign_bytes control $ty:ident $m:ident $d:ident) => {
        Some(control_sign_bytes_in($m, $d.for_kind(<$ty as ControlSigned>::KIND)))
    };
    (@sign_bytes ack $ty:ident $m:ident $d:ident) => {{
        let _ = ($m, $d);
        None
    }};

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

    (@sign ai $s:ident $m:ident $fill:ident) => {
        if $fill { $s.sign_ai($m) } else { $s.resign_ai($m) }
    };
    (@sign control $s:ident $m:ident $fill:ident) => {
        if $fill { $s.sign_control($m) } else { $s.resign_control($m) }
    };
    (@sign ack $s:ident $m:ident $fill:ident) => { $m };

    (@verify ai $variant:ident $ty:ident $v:ident $value:ident $h:ident
        |$sm:ident| $structure:block) => {{
        Message::$variant($v.verify_ai_unguarded::<$ty>($value)?)
    }};
    (@verify control $variant:ident $ty:ident $v:ident $value:ident $h:ident
        |$sm:ident| $structure:block) => {
        Message::$variant($v.verify_control::<$ty>($value)?)
    };
    (@verify ack $variant:ident $ty:ident $v:ident $value:ident $h:ident
        |$sm:ident| $structure:block) => {{
        let m = $v.verify_ack::<$ty>($value, $h)?;
        let $sm = &m;
        let () = $structure?;
        Message::$variant(m)
    }};

    (@impl ai $variant:ident $ty:ident |$sm:ident| $structure:block {
        domain: $d:literal,
        content: $content:ident,
        max: $max:expr,
        after_signature: |$am:ident, $av:ident| $after:block $(,)?
    }) => {
        ai_envelope!($ty, Kind::$variant, $content, $variant);
        impl AiChecks for $ty {
            const CONTENT_NAME: &'static str = stringify!($content);
            const MAX_CONTENT: usize = $max;
            fn check_structure(&self) -> Result<(), VerifyError> {
                let $sm = self;
                $structure
            }
            fn check_after_signature(&self, $av: &Verifier) -> Result<(), VerifyError> {
                let $am = self;
                $after
            }
        }
    };
    (@impl control $variant:ident $ty:ident |$sm:ident| $structure:block {
        domain: $d:literal or $e:literal,
        prepare: |$pm:ident| $prepare:block,
        content_hash: |$cm:ident| $content_hash:block $(,)?
    }) => {
        control_signed!($ty, Kind::$variant, $d, $variant, |$pm| $prepare);
        impl ControlChecks for $ty {
            fn check_structure(&self) -> Result<(), VerifyError> {
                let $sm = self;
                $structure
            }
            fn check_content_hash(&self) -> Result<(), VerifyError> {
                let $cm = self;
                $content_hash
            }
        }
    };
    (@impl ack $variant:ident $ty:ident |$sm:ident| $structure:block {}) => {};
}

/// [`super::AiEnvelope`] for an `ai.*` message whose content field is `$content`.
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

/// [`super::ControlSigned`] for a `control.*` message; `$prepare` fills derived fields.
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
