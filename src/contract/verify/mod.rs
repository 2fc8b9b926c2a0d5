//! The verifier of SPEC.md section 4: a record's bytes in, a typed message or the first
//! failing reason out. This is the one verification path for the library, the CLI, the
//! consumer and the fuzz targets. The per-kind table's rows expand here into each kind's
//! checks and the dispatch by kind (`kind_checks`).

use super::checks::{check_len, check_str, is_canonical_uuid_v4, sha256, truncate};
use super::clock::{Clock, SystemClock};
use super::kinds::rows_for;
use super::limits::*;
use super::messages::*;
use super::reason::{fail, Reason, VerifyError};
use super::replay::{Place, ReplayGuard, ReplayLimits, ReplayVerdict, Reservation};
use super::signing::{
    ai_message_sign_bytes, control_sign_bytes_in, SigningDomains, ACK_SIGNATURE_ALG_HEADER,
    ACK_SIGNATURE_HEADER,
};
use super::trust::TrustStore;
use super::wire::{GoDecode, RecordBytes};
use bytes::Bytes;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

mod ai;
mod control;
mod payload;

pub(crate) use ai::check_payload_metadata;
pub use ai::AiChecks;
pub use control::ControlChecks;

/// Tunables of the verifier. `Default` gives SPEC defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifierConfig {
    /// Allowed |ts - now| for `ai.*` (`KAFKA_MAX_TIMESTAMP_SKEW`, default 300 s).
    pub ai_skew_secs: i64,
    /// Allowed |timestamp - now| for `control.*` (`CONTROL_TIMESTAMP_SKEW`, default 60 s).
    pub control_skew_secs: i64,
    /// How long accepted nonces are remembered (default and minimum: twice `ai_skew_secs`).
    pub replay_window_secs: i64,
    /// Memory bounds of the replay guard, in total and per producer.
    pub replay_limits: ReplayLimits,
    /// `AI_POLICY_ALLOWED_PUBKEYS`: when set, `ai.policy.v1` signers must be listed.
    pub policy_allowlist: Option<HashSet<[u8; 32]>>,
    /// When set, policy acks must carry an `ack-signature` by one of these keys.
    pub ack_keys: Option<TrustStore>,
    /// The control signing domains (`CONTROL_*_SIGNING_DOMAIN`), as the signers use them.
    pub domains: SigningDomains,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            ai_skew_secs: 300,
            control_skew_secs: 60,
            replay_window_secs: 600,
            replay_limits: ReplayLimits::default(),
            policy_allowlist: None,
            ack_keys: None,
            domains: SigningDomains::default(),
        }
    }
}

/// A record that passed verification up to and including the replay guard.
#[derive(Debug)]
pub enum Admitted {
    /// First sighting: handle it, then confirm the reservation (`ai.*` only) once it was
    /// handled or dead-lettered.
    Fresh(Message, Option<Reservation>),
    /// The guard first saw this message at this very place: the log handed the same record
    /// out again (a lost commit, a rebalance). Skip it and commit it; it is not a replay.
    Redelivered(Message),
}

/// Verifies records of every CyberMesh kind. Share it behind an `Arc`: the replay guard is
/// internally synchronized.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    trust: std::sync::RwLock<Arc<TrustStore>>,
    /// The policy allowlist in force (starts as `config.policy_allowlist`; reloadable).
    allowlist: std::sync::RwLock<Option<Arc<HashSet<[u8; 32]>>>>,
    clock: Arc<dyn Clock>,
    replay: Arc<ReplayGuard>,
    /// Signers' keys as curve points, decompressed once per key.
    keys: KeyCache,
}

impl Verifier {
    /// A verifier on the system clock.
    pub fn new(config: VerifierConfig, trust: TrustStore) -> Self {
        Self::with_clock(config, trust, Arc::new(SystemClock))
    }

    /// A verifier on an injected clock.
    pub fn with_clock(config: VerifierConfig, trust: TrustStore, clock: Arc<dyn Clock>) -> Self {
        let replay = Arc::new(ReplayGuard::new(
            replay_window(&config),
            config.replay_limits,
        ));
        Verifier {
            allowlist: std::sync::RwLock::new(config.policy_allowlist.clone().map(Arc::new)),
            config,
            trust: std::sync::RwLock::new(Arc::new(trust)),
            clock,
            replay,
            keys: KeyCache::default(),
        }
    }

    /// The control trust store in force now.
    pub fn trust(&self) -> Arc<TrustStore> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the control trust store (a reload): records verified from now on use it.
    pub(crate) fn replace_trust(&self, trust: TrustStore) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
    }

    /// Replaces the `ai.policy.v1` allowlist (a reload; `None` accepts any signer).
    pub(crate) fn replace_policy_allowlist(&self, allowlist: Option<HashSet<[u8; 32]>>) {
        *self.allowlist.write().unwrap_or_else(|p| p.into_inner()) = allowlist.map(Arc::new);
    }

    /// The `ai.policy.v1` allowlist in force now.
    pub fn policy_allowlist(&self) -> Option<Arc<HashSet<[u8; 32]>>> {
        self.allowlist
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Verifies a record of `kind` without headers. Given shared bytes ([`RecordBytes`]), the
    /// message's `bytes` fields are slices of them, not copies.
    pub fn verify(&self, kind: Kind, value: impl RecordBytes) -> Result<Message, VerifyError> {
        self.verify_record(kind, value, &BTreeMap::new())
    }

    /// Verifies a record of `kind` with its headers (used by policy acks, SPEC 3c); an accepted
    /// `ai.*` message is remembered by the replay guard at once.
    pub fn verify_record(
        &self,
        kind: Kind,
        value: impl RecordBytes,
        headers: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Message, VerifyError> {
        match self.verify_reserving(kind, value, headers, None)? {
            Admitted::Fresh(m, reservation) => {
                if let Some(r) = reservation {
                    r.confirm();
                }
                Ok(m)
            }
            // Without a place nothing is a redelivery.
            Admitted::Redelivered(_) => fail(Reason::Replayed, "(producer_id, nonce) seen before"),
        }
    }

    /// Like [`Verifier::verify_record`] for a record found at `place`, but an accepted
    /// `ai.*` message is only *reserved* in the replay guard: confirm the reservation once the
    /// record was handled or dead-lettered; dropping it (the partition stopped first) lets a
    /// redelivery through again. A message the guard first saw at this very place is
    /// [`Admitted::Redelivered`], not `replayed` (SPEC 3e).
    pub(crate) fn verify_reserving(
        &self,
        kind: Kind,
        value: impl RecordBytes,
        headers: &BTreeMap<String, Vec<u8>>,
        place: Option<Place>,
    ) -> Result<Admitted, VerifyError> {
        let m = self.verify_unguarded(kind, value, headers)?;
        let Some((producer_id, nonce)) = m.replay_key() else {
            return Ok(Admitted::Fresh(m, None));
        };
        // 9. replay
        let now = self.clock.now_secs();
        match self.replay.reserve(producer_id, nonce, now, place) {
            Ok(r) => Ok(Admitted::Fresh(m, Some(r))),
            Err(ReplayVerdict::Redelivered) => Ok(Admitted::Redelivered(m)),
            Err(ReplayVerdict::InFlight) => fail(
                Reason::Replayed,
                "(producer_id, nonce) is being handled from another record",
            ),
            Err(_) => fail(Reason::Replayed, "(producer_id, nonce) seen before"),
        }
    }

    /// Every check of SPEC 4 but the replay guard's (step 9): what the read-back of a
    /// partition runs in parallel before it remembers the accepted messages in log order.
    pub(crate) fn verify_unguarded(
        &self,
        kind: Kind,
        value: impl RecordBytes,
        headers: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Message, VerifyError> {
        verify_kind(self, kind, &value.into_bytes(), headers)
    }

    /// Remembers a verified `ai.*` message found at `place` in the log, unless the guard knows
    /// it already (its first sighting stays); returns whether it was new. Other families are
    /// not guarded: `false`.
    pub fn learn(&self, message: &Message, place: Place) -> bool {
        match message.replay_key() {
            Some((producer_id, nonce)) => {
                self.replay
                    .learn(producer_id, nonce, self.clock.now_secs(), place)
            }
            None => false,
        }
    }

    /// The clock's now, in seconds.
    pub fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    /// How long accepted nonces are remembered: the read-back at assignment covers this much
    /// of the log (SPEC 3e: twice the skew, or `replay_window_secs` when longer).
    pub fn replay_window_secs(&self) -> i64 {
        replay_window(&self.config)
    }

    /// Verifies an `ai.*` record by SPEC 4 steps 1-8 (everything but the replay guard).
    pub(crate) fn verify_ai_unguarded<M: AiChecks>(&self, value: &Bytes) -> Result<M, VerifyError> {
        let m: M = decode(value)?;
        // 2. structure, sizes, alg
        m.check_structure()?;
        check_len("content_hash", m.content_hash(), 32)?;
        check_len("producer_id", m.producer_id(), 32)?;
        check_len("nonce", m.nonce(), 16)?;
        check_len("signature", m.signature(), 64)?;
        check_len("pubkey", m.pubkey(), 32)?;
        if m.ts() == 0 {
            return fail(Reason::InvalidField, "ts is 0");
        }
        if m.content().len() > M::MAX_CONTENT {
            return fail(
                Reason::PayloadTooLarge,
                format!(
                    "{} is {} bytes, over {}",
                    M::CONTENT_NAME,
                    m.content().len(),
                    M::MAX_CONTENT
                ),
            );
        }
        check_alg(m.alg())?;
        // 3. clock
        let now = self.clock.now_secs();
        check_skew(m.ts(), now, self.config.ai_skew_secs, "ts")?;
        // 4. content hash
        if sha256(m.content()).as_slice() != m.content_hash() {
            return fail(
                Reason::ContentHashMismatch,
                format!("SHA-256 of {} differs from content_hash", M::CONTENT_NAME),
            );
        }
        // 5. signature
        self.keys
            .check_signature(m.pubkey(), &ai_message_sign_bytes(&m), m.signature())?;
        // 6. producer
        if m.producer_id() != m.pubkey() {
            return fail(Reason::ProducerMismatch, "producer_id differs from pubkey");
        }
        // 7, 8. kind-specific checks
        m.check_after_signature(self)?;
        Ok(m)
    }

    /// Verifies a `control.*` record (SPEC 4, control order) and returns the typed message.
    pub(crate) fn verify_control<M: ControlChecks>(&self, value: &Bytes) -> Result<M, VerifyError> {
        let m: M = decode(value)?;
        m.check_structure()?;
        check_len("producer_id", m.producer_id(), 32)?;
        check_len("signature", m.signature(), 64)?;
        check_len("pubkey", m.pubkey(), 32)?;
        check_alg(m.alg())?;
        if m.timestamp() == 0 {
            return fail(Reason::TimestampSkew, "timestamp is 0");
        }
        check_skew(
            m.timestamp(),
            self.clock.now_secs(),
            self.config.control_skew_secs,
            "timestamp",
        )?;
        if m.producer_id() != m.pubkey() {
            return fail(Reason::ProducerMismatch, "producer_id differs from pubkey");
        }
        if !self.trust().contains(m.pubkey()) {
            return fail(
                Reason::UntrustedKey,
                format!("signer {} is not in the trust store", short_hex(m.pubkey())),
            );
        }
        m.check_content_hash()?;
        let domain = self.config.domains.for_kind(M::KIND);
        self.keys.check_signature(
            m.pubkey(),
            &control_sign_bytes_in(&m, domain),
            m.signature(),
        )?;
        Ok(m)
    }

    /// SPEC 4 step 7 for `ai.policy.v1`: with `AI_POLICY_ALLOWED_PUBKEYS` set, the signer must
    /// be listed (`untrusted_key`).
    pub(crate) fn check_policy_allowlist(&self, pubkey: &[u8]) -> Result<(), VerifyError> {
        match self.policy_allowlist() {
            Some(allow) if !<[u8; 32]>::try_from(pubkey).is_ok_and(|k| allow.contains(&k)) => fail(
                Reason::UntrustedKey,
                format!(
                    "policy signer {} is not in AI_POLICY_ALLOWED_PUBKEYS",
                    short_hex(pubkey)
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Verifies a header-signed record (a policy ack): decodes it and, when ack keys are
    /// configured, checks the `ack-signature` header over the record value (SPEC 3c).
    pub(crate) fn verify_ack<M: GoDecode>(
        &self,
        value: &Bytes,
        headers: &BTreeMap<String, Vec<u8>>,
    ) -> Result<M, VerifyError> {
        let m: M = decode(value)?;
        let Some(keys) = &self.config.ack_keys else {
            return Ok(m);
        };
        let Some(sig) = headers.get(ACK_SIGNATURE_HEADER) else {
            return fail(Reason::BadSignature, "ack-signature header missing");
        };
        if let Some(alg) = headers.get(ACK_SIGNATURE_ALG_HEADER) {
            if !alg.eq_ignore_ascii_case(b"ed25519") {
                return fail(Reason::UnsupportedAlg, "ack-signature-alg is not ed25519");
            }
        }
        let sig: [u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| VerifyError::new(Reason::InvalidField, "ack-signature is not 64 bytes"))?;
        let sig = Signature::from_bytes(&sig);
        let ok = keys
            .keys()
            .any(|k| VerifyingKey::from_bytes(k).is_ok_and(|vk| vk.verify(value, &sig).is_ok()));
        if ok {
            Ok(m)
        } else {
            fail(
                Reason::BadSignature,
                "ack-signature matches no trusted ack key",
            )
        }
    }
}

/// SPEC 4 step 1: the size limit, then protobuf-go's decoding (a field under the wrong wire
/// type is skipped as unknown; bytes that do not parse, or invalid UTF-8, are `malformed`).
fn decode<M: GoDecode>(value: &Bytes) -> Result<M, VerifyError> {
    if value.len() > MAX_RECORD_BYTES {
        return fail(
            Reason::TooLarge,
            format!("record is {} bytes, over {MAX_RECORD_BYTES}", value.len()),
        );
    }
    M::go_decode(value).map_err(|e| VerifyError::new(Reason::Malformed, e.to_string()))
}

/// The replay window: `replay_window_secs`, at least twice the `ai.*` skew (SPEC 3e).
fn replay_window(config: &VerifierConfig) -> i64 {
    config
        .replay_window_secs
        .max(config.ai_skew_secs.saturating_mul(2))
}

fn check_alg(alg: &str) -> Result<(), VerifyError> {
    if alg == ALG_ED25519 {
        Ok(())
    } else {
        fail(
            Reason::UnsupportedAlg,
            format!("alg {:?} is not Ed25519", truncate(alg)),
        )
    }
}

fn check_skew(ts: i64, now: i64, skew: i64, name: &str) -> Result<(), VerifyError> {
    let diff = (i128::from(ts) - i128::from(now)).abs();
    if diff > i128::from(skew) {
        return fail(
            Reason::TimestampSkew,
            format!("{name} {ts} is {diff} s from now {now}, over {skew} s"),
        );
    }
    Ok(())
}

/// Signers' public keys, decompressed to curve points once: decompressing costs about a
/// sixth of a verification, and a mesh has few signers. Bounded: past [`KeyCache::MAX`] keys
/// it starts over, so a peer inventing keys costs time, never memory. A key that is not a
/// point is never remembered.
#[derive(Debug, Default)]
struct KeyCache {
    points: std::sync::RwLock<std::collections::HashMap<[u8; 32], VerifyingKey>>,
}

impl KeyCache {
    /// Keys remembered at most.
    const MAX: usize = 4096;

    fn point(&self, pk: &[u8; 32]) -> Option<VerifyingKey> {
        let read = self.points.read().unwrap_or_else(|p| p.into_inner());
        if let Some(vk) = read.get(pk) {
            return Some(*vk);
        }
        drop(read);
        let vk = VerifyingKey::from_bytes(pk).ok()?;
        let mut write = self.points.write().unwrap_or_else(|p| p.into_inner());
        if write.len() >= Self::MAX {
            write.clear();
        }
        write.insert(*pk, vk);
        Some(vk)
    }

    /// Pure Ed25519 with Go's `crypto/ed25519.Verify` acceptance: cofactorless, S < L.
    fn check_signature(
        &self,
        pubkey: &[u8],
        msg: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let bad = |d: &str| VerifyError::new(Reason::BadSignature, d);
        let pk: [u8; 32] = pubkey
            .try_into()
            .map_err(|_| bad("pubkey is not 32 bytes"))?;
        let sig: [u8; 64] = signature
            .try_into()
            .map_err(|_| bad("signature is not 64 bytes"))?;
        let vk = self
            .point(&pk)
            .ok_or_else(|| bad("pubkey is not a curve point"))?;
        vk.verify(msg, &Signature::from_bytes(&sig))
            .map_err(|_| bad("Ed25519 signature does not verify"))
    }
}

fn short_hex(b: &[u8]) -> String {
    hex::encode(&b[..b.len().min(8)])
}

/// The rows' verification part: each kind's checks ([`AiChecks`], [`ControlChecks`], a
/// policy ack's structure) and the dispatch of a record to its family's path.
macro_rules! kind_checks {
    ( $(
        [$(#[$doc:meta])*] $variant:ident $ty:ident $snake:ident $proto:literal
        $topic:literal $topic_env:literal ($($key:tt)*) (|$sm:ident| $structure:block)
        $family:ident { $($fam:tt)* }
    )* ) => {
        /// Verifies a record of `kind` by its family's path, up to (not including) the replay
        /// check of `ai.*` (SPEC 4 step 9), which the verifier applies to every family alike.
        fn verify_kind(
            v: &Verifier,
            kind: Kind,
            value: &Bytes,
            headers: &BTreeMap<String, Vec<u8>>,
        ) -> Result<Message, VerifyError> {
            Ok(match kind {
                $( Kind::$variant => kind_checks!(
                    @verify $family $variant $ty v value headers |$sm| $structure
                ), )*
            })
        }

        $( kind_checks!(@impl $family $variant $ty |$sm| $structure { $($fam)* }); )*
    };

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

crate::kind_rows!(rows_for; kind_checks);
