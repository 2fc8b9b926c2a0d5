//! The signed wire contract: messages (SPEC 2), signing (SPEC 3) and verification (SPEC 4).
//! No Kafka here: this is the part every other piece calls. Everything particular to one
//! message kind is its row in [`kinds`]; the rest is written once for all kinds.

#[macro_use]
mod table;

pub mod clock;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod json;
pub mod keys;
pub mod kinds;
pub mod limits;
pub mod messages;
pub mod nonce;
pub mod reason;
pub mod replay;
pub mod signing;
pub mod trust;
pub mod verify;
pub mod wire;

/// Code generated from `proto/`: prost's messages (public as [`messages`]' list), and
/// build.rs's [`wire::GoDecode`] impls.
#[allow(missing_docs, clippy::all, unreachable_pub)]
mod proto {
    /// `cybermesh.ai.v1`.
    pub mod ai {
        include!(concat!(env!("OUT_DIR"), "/cybermesh.ai.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/cybermesh.ai.v1.wire.rs"));
    }
    /// `cybermesh.control.v1`.
    pub mod control {
        include!(concat!(env!("OUT_DIR"), "/cybermesh.control.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/cybermesh.control.v1.wire.rs"));
    }
}

pub use clock::{Clock, FixedClock, SystemClock};
pub use messages::{AiEnvelope, ControlSigned, Kind, KindOf, Message};
pub use reason::{Reason, VerifyError};
pub use replay::Place;
pub use signing::{Signer, SigningDomains};
pub use trust::TrustStore;
pub use verify::{Admitted, Verifier, VerifierConfig};
