//! The signed wire contract: messages (SPEC 2), signing (SPEC 3) and verification (SPEC 4).
//! No Kafka here: this is the part every other piece calls. Everything particular to one
//! message kind is its row in `kinds.rs`; the rest is written once for all kinds. The layers,
//! each importing only those below it: `kinds.rs` (the table, as data: [`Kind`], [`KINDS`])
//! and `checks.rs` (the field rules rows are written in), then `messages.rs` ([`Message`]),
//! `signing.rs` ([`Signer`]), `verify/` ([`Verifier`]). The modules are private; what is
//! public is the list below.

mod checks;
pub(crate) mod clock;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod json;
pub mod keys;
pub(crate) mod kinds;
pub mod limits;
pub(crate) mod messages;
#[cfg(feature = "fuzzing")]
pub mod nonce;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)] // public to the fuzz targets only (feature `fuzzing`)
pub(crate) mod nonce;
mod proto;
pub(crate) mod reason;
#[cfg(feature = "fuzzing")]
pub mod replay;
#[cfg(not(feature = "fuzzing"))]
#[allow(unreachable_pub, dead_code)] // its guard is public to the fuzz targets only (`fuzzing`)
pub(crate) mod replay;
pub(crate) mod signing;
pub(crate) mod trust;
pub(crate) mod verify;
pub(crate) mod wire;

// What is public, by layer; the modules themselves are not (but for the key files, the proto3
// JSON mapping and the SPEC limits, which are namespaces of their own).
pub use clock::{Clock, FixedClock, SystemClock};
pub use kinds::{Family, Kind, KindSpec, UnknownKind, KINDS};
pub use messages::{
    AiEnvelope, AnomalyEvent, ChainOfCustodyEntry, CommitEvent, ControlSigned, EvidenceEvent,
    EvidenceRequestEvent, KindOf, Message, PolicyAckEvent, PolicyEvent, PolicyUpdateEvent,
    ReputationEvent, ALG_ED25519,
};
pub use reason::{Reason, VerifyError};
pub use replay::{Place, ReplayLimits};
pub use signing::{
    ai_message_sign_bytes, ai_sign_bytes, control_sign_bytes, control_sign_bytes_in, sha256,
    Signer, SigningDomains, ACK_SIGNATURE_ALG_HEADER, ACK_SIGNATURE_HEADER,
};
pub use trust::{parse_allowlist, BftConfig, TrustError, TrustStore, ValidatorEntry};
pub use verify::{Admitted, AiChecks, ControlChecks, Verifier, VerifierConfig};
pub use wire::{GoDecode, RecordBytes};
