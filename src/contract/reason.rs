//! Stable reason codes (SPEC.md section 4) and the verifier's error type.

use std::fmt;

/// Why a record was refused. The string codes are stable API: they appear in errors,
/// DLQ `reason` headers and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    /// Record value over 1 MiB.
    TooLarge,
    /// Protobuf decode failed or a string was not valid UTF-8.
    Malformed,
    /// A field is out of its allowed shape (length, range, count).
    InvalidField,
    /// Payload/params over 512 KiB or proof_blob over 256 KiB.
    PayloadTooLarge,
    /// `alg` is not exactly `Ed25519`.
    UnsupportedAlg,
    /// Timestamp zero (control) or outside the configured skew.
    TimestampSkew,
    /// SHA-256 of the content differs from the carried hash.
    ContentHashMismatch,
    /// Ed25519 verification failed.
    BadSignature,
    /// `producer_id` differs from `pubkey`.
    ProducerMismatch,
    /// Key absent from the trust store or allowlist.
    UntrustedKey,
    /// Anomaly payload JSON disagrees with severity/confidence fields.
    PayloadMetadataMismatch,
    /// `(producer_id, nonce)` seen before.
    Replayed,
    /// The consumer's handler kept failing (DLQ only; never produced by the verifier).
    HandlerFailed,
}

impl Reason {
    /// Every reason, in SPEC order.
    pub const ALL: [Reason; 13] = [
        Reason::TooLarge,
        Reason::Malformed,
        Reason::InvalidField,
        Reason::PayloadTooLarge,
        Reason::UnsupportedAlg,
        Reason::TimestampSkew,
        Reason::ContentHashMismatch,
        Reason::BadSignature,
        Reason::ProducerMismatch,
        Reason::UntrustedKey,
        Reason::PayloadMetadataMismatch,
        Reason::Replayed,
        Reason::HandlerFailed,
    ];

    /// The stable string code of SPEC.md section 4.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::Malformed => "malformed",
            Reason::InvalidField => "invalid_field",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::TimestampSkew => "timestamp_skew",
            Reason::ContentHashMismatch => "content_hash_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::ProducerMismatch => "producer_mismatch",
            Reason::UntrustedKey => "untrusted_key",
            Reason::PayloadMetadataMismatch => "payload_metadata_mismatch",
            Reason::Replayed => "replayed",
            Reason::HandlerFailed => "handler_failed",
        }
    }

    /// Parses a stable code back into a reason.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused record: the reason code and a human-readable detail (never key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
#[non_exhaustive]
pub struct VerifyError {
    /// The stable reason code.
    pub reason: Reason,
    /// What exactly failed, for operators.
    pub detail: String,
}

impl VerifyError {
    /// Builds an error from a reason and a detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        VerifyError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Shorthand for `Err(VerifyError::new(..))`.
pub(crate) fn fail<T>(reason: Reason, detail: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::new(reason, detail))
}
