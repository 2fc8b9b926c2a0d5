//! The bytes that are signed (SPEC 3a, 3b, 3c) and the [`Signer`] that fills and signs
//! messages: the per-kind table's rows expand here into what each kind signs
//! (`kind_signing`).

use super::clock::{Clock, SystemClock};
use super::kinds::{rows_for, Family};
use super::messages::{AiEnvelope, ControlSigned, Kind, Message, ALG_ED25519};
use super::nonce::NonceGenerator;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use super::checks::sha256;

/// Record header carrying a policy-ack signature (SPEC 3c).
pub const ACK_SIGNATURE_HEADER: &str = "ack-signature";
/// Record header naming the policy-ack signature algorithm.
pub const ACK_SIGNATURE_ALG_HEADER: &str = "ack-signature-alg";

/// The domain prefix of an AI envelope, including the policy's 0x00 separator (the per-kind
/// table's).
pub(crate) fn ai_domain(kind: Kind) -> &'static [u8] {
    match kind.family() {
        Family::Ai => kind.spec().domain,
        _ => b"",
    }
}

/// SPEC 3a: `domain || ts(8 BE) || pid_len(2 BE) || producer_id || nonce || content_hash`.
pub fn ai_sign_bytes(
    kind: Kind,
    ts: i64,
    producer_id: &[u8],
    nonce: &[u8],
    content_hash: &[u8],
) -> Vec<u8> {
    let domain = ai_domain(kind);
    let mut out = Vec::with_capacity(
        domain.len() + 10 + producer_id.len() + nonce.len() + content_hash.len(),
    );
    out.extend_from_slice(domain);
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&(producer_id.len() as u16).to_be_bytes());
    out.extend_from_slice(producer_id);
    out.extend_from_slice(nonce);
    out.extend_from_slice(content_hash);
    out
}

/// The signed bytes of an AI message as it stands.
pub fn ai_message_sign_bytes<M: AiEnvelope>(m: &M) -> Vec<u8> {
    ai_sign_bytes(
        M::KIND,
        m.ts(),
        m.producer_id(),
        m.nonce(),
        m.content_hash(),
    )
}

/// The SPEC 3b signing domains of the four signed control kinds. They are configuration
/// ("signing domains are configurable"): signer and verifier must use the same ones. The
/// defaults are the seed's and the vectors'; deployed CyberMesh services since 2026-03 sign
/// policy updates with `control.policy.v2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningDomains {
    /// Domain per signed control kind (the per-kind table's defaults unless set).
    domains: std::collections::BTreeMap<Kind, String>,
}

impl Default for SigningDomains {
    fn default() -> Self {
        let domains = super::kinds::KINDS
            .iter()
            .filter(|s| s.domain_env.is_some())
            .map(|s| (s.kind, String::from_utf8_lossy(s.domain).into_owned()))
            .collect();
        SigningDomains { domains }
    }
}

impl SigningDomains {
    /// The domain of a signed control kind (empty for the others).
    pub fn for_kind(&self, kind: Kind) -> &[u8] {
        self.domains.get(&kind).map_or(b"", |d| d.as_bytes())
    }

    /// Sets the domain of a signed control kind (ignored for the others).
    pub fn set(&mut self, kind: Kind, domain: impl Into<String>) {
        if let Some(d) = self.domains.get_mut(&kind) {
            *d = domain.into();
        }
    }
}

/// SPEC 3b with the default domain: see [`control_sign_bytes_in`].
pub fn control_sign_bytes<M: ControlSigned>(m: &M) -> Vec<u8> {
    control_sign_bytes_in(m, M::DOMAIN)
}

/// SPEC 3b: `domain || canonical encoding with signature, pubkey and alg cleared`.
///
/// prost encodes fields in ascending field-number order whatever the declaration order,
/// omits proto3 defaults, packs repeated scalars and drops unknown fields: exactly the
/// canonical encoding the Go and Python libraries emit.
pub fn control_sign_bytes_in<M: ControlSigned>(m: &M, domain: &[u8]) -> Vec<u8> {
    let mut body = m.clone();
    body.set_signature_fields(Vec::new(), Vec::new(), String::new());
    let mut out = Vec::with_capacity(domain.len() + body.encoded_len());
    out.extend_from_slice(domain);
    body.encode(&mut out)
        .expect("Vec<u8> grows to fit the encoding");
    out
}

/// Signs messages with one Ed25519 key, filling every envelope field (SPEC 3).
///
/// Cheap to share behind an `Arc`: nonce generation is thread-safe.
pub struct Signer {
    /// The key's scalar and nonce prefix, expanded once: `SigningKey::sign` re-derives
    /// them (a SHA-512) on every call; the signature is the same.
    expanded: ExpandedSecretKey,
    /// The public key (its raw 32 bytes are the `producer_id`).
    verifying: VerifyingKey,
    nonces: NonceGenerator,
    clock: Arc<dyn Clock>,
    domains: SigningDomains,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &hex::encode(self.verifying.as_bytes()))
            .field("instance_id", &self.nonces.instance_id())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `key` whose nonces carry `instance_id` (the node id), signing control
    /// messages under `domains` (SPEC 3b), on the system clock. A process with a
    /// [`Config`](crate::config::Config) builds it with `config.signer(key)` (or lets
    /// [`Mesh::builder`](crate::mesh::Mesh::builder) do so), which takes both from the
    /// configuration the verifier uses too.
    pub fn new(key: SigningKey, instance_id: u32, domains: SigningDomains) -> Self {
        Self::with_clock(key, instance_id, domains, Arc::new(SystemClock))
    }

    /// A signer on an injected clock.
    pub fn with_clock(
        key: SigningKey,
        instance_id: u32,
        domains: SigningDomains,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Signer {
            expanded: ExpandedSecretKey::from(key.as_bytes()),
            verifying: key.verifying_key(),
            nonces: NonceGenerator::new(instance_id),
            clock,
            domains,
        }
    }

    /// The control signing domains it signs under.
    pub fn domains(&self) -> &SigningDomains {
        &self.domains
    }

    /// The raw 32-byte public key (the `producer_id`).
    pub fn public_key(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// A 64-byte Ed25519 signature over `bytes` (what a policy ack's header carries).
    pub fn sign_raw(&self, bytes: &[u8]) -> [u8; 64] {
        self.sign(bytes).to_bytes()
    }

    /// Ed25519 (RFC 8032, pure) over `bytes` with the expanded key: what
    /// `SigningKey::sign` returns, without expanding the key again.
    fn sign(&self, bytes: &[u8]) -> Signature {
        ed25519_dalek::hazmat::raw_sign::<sha2::Sha512>(&self.expanded, bytes, &self.verifying)
    }

    /// The record headers that carry the signature of a `kind` record whose value is `value`:
    /// for a header-signed kind (policy acks, SPEC 3c) `ack-signature` over the value and
    /// `ack-signature-alg`; none for the others, which are signed inside the message.
    pub fn record_headers(&self, kind: Kind, value: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut headers = BTreeMap::new();
        if kind.family() == Family::Ack {
            headers.insert(
                ACK_SIGNATURE_HEADER.to_string(),
                self.sign_raw(value).to_vec(),
            );
            headers.insert(ACK_SIGNATURE_ALG_HEADER.to_string(), b"ed25519".to_vec());
        }
        headers
    }

    /// Fills `ts` (now), `content_hash`, `nonce`, `producer_id`, `pubkey`, `alg` and signs.
    pub fn sign_ai<M: AiEnvelope>(&self, mut m: M) -> M {
        let now_ms = self.clock.now_ms();
        let nonce = self.nonces.next_at(now_ms);
        let hash = sha256(m.content()).to_vec();
        m.set_envelope(now_ms.div_euclid(1000), hash, self.public_key(), nonce);
        self.resign_ai(m)
    }

    /// Signs an AI message whose envelope fields are already set (deterministic).
    pub fn resign_ai<M: AiEnvelope>(&self, mut m: M) -> M {
        let sig = self.sign(&ai_message_sign_bytes(&m));
        m.set_signature(sig.to_bytes().to_vec());
        m
    }

    /// Fills `producer_id`, a zero `timestamp` (with now) and derived fields (a policy
    /// update's empty `rule_hash`), then signs the canonical
    /// encoding and sets `signature`, `pubkey` and `alg`.
    pub fn sign_control<M: ControlSigned>(&self, mut m: M) -> M {
        if m.timestamp() == 0 {
            m.set_timestamp(self.clock.now_secs());
        }
        m.set_producer_id(self.public_key());
        m.fill_derived();
        self.resign_control(m)
    }

    /// Signs any message by its kind: the AI envelope for `ai.*`, the canonical control
    /// signature for `control.*`. A policy ack is returned as is (its signature travels in
    /// record headers: see [`Signer::record_headers`]).
    pub fn sign_message(&self, m: Message) -> Message {
        sign_message(self, m, true)
    }

    /// Signs any message as it stands, its envelope fields already set (deterministic): what
    /// [`Signer::resign_ai`] and [`Signer::resign_control`] do, chosen by kind.
    pub fn resign_message(&self, m: Message) -> Message {
        sign_message(self, m, false)
    }

    /// Signs a control message as it stands (deterministic).
    pub fn resign_control<M: ControlSigned>(&self, mut m: M) -> M {
        let sig = self.sign(&control_sign_bytes_in(&m, self.domains.for_kind(M::KIND)));
        m.set_signature_fields(
            sig.to_bytes().to_vec(),
            self.verifying.as_bytes().to_vec(),
            ALG_ED25519.to_string(),
        );
        m
    }
}

/// The rows' signing part: what each kind's signature covers ([`Message::sign_bytes`]) and
/// how a message of each family is signed.
macro_rules! kind_signing {
    ( $(
        [$(#[$doc:meta])*] $variant:ident $ty:ident $snake:ident $proto:literal
        $topic:literal $topic_env:literal ($($key:tt)*) ($($structure:tt)*)
        $family:ident { $($fam:tt)* }
    )* ) => {
        impl Message {
            /// The bytes its signature covers as it stands (SPEC 3a, or 3b under `domains`);
            /// `None` for a kind signed in record headers (policy acks, SPEC 3c: see
            /// [`Signer::record_headers`]).
            pub fn sign_bytes(&self, domains: &SigningDomains) -> Option<Vec<u8>> {
                match self {
                    $( Message::$variant(m) => kind_signing!(@sign_bytes $family $variant m domains), )*
                }
            }
        }

        /// Signs by family: the AI envelope, the canonical control signature, or nothing.
        fn sign_message(signer: &Signer, m: Message, fill: bool) -> Message {
            match m {
                $( Message::$variant(m) =>
                    Message::$variant(kind_signing!(@sign $family signer m fill)), )*
            }
        }
    };

    (@sign_bytes ai $variant:ident $m:ident $d:ident) => { Some(ai_message_sign_bytes($m)) };
    (@sign_bytes control $variant:ident $m:ident $d:ident) => {
        Some(control_sign_bytes_in($m, $d.for_kind(Kind::$variant)))
    };
    (@sign_bytes ack $variant:ident $m:ident $d:ident) => {{
        let _ = ($m, $d);
        None
    }};

    (@sign ai $s:ident $m:ident $fill:ident) => {
        if $fill { $s.sign_ai($m) } else { $s.resign_ai($m) }
    };
    (@sign control $s:ident $m:ident $fill:ident) => {
        if $fill { $s.sign_control($m) } else { $s.resign_control($m) }
    };
    (@sign ack $s:ident $m:ident $fill:ident) => {{
        let _ = ($s, $fill);
        $m
    }};
}

crate::kind_rows!(rows_for; kind_signing);

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    /// The expanded-key path signs exactly as `SigningKey::sign` does (Ed25519 is
    /// deterministic): same key and bytes, same 64 bytes.
    #[test]
    fn the_expanded_key_signs_as_the_signing_key_does() {
        for seed in [[0u8; 32], [1; 32], [0xa7; 32]] {
            let key = SigningKey::from_bytes(&seed);
            let signer = Signer::new(key.clone(), 7, SigningDomains::default());
            for len in [0usize, 1, 63, 64, 200, 4096] {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| (i * 31 + seed[0] as usize) as u8)
                    .collect();
                assert_eq!(
                    signer.sign_raw(&bytes),
                    key.sign(&bytes).to_bytes(),
                    "len {len}"
                );
            }
        }
    }
}
