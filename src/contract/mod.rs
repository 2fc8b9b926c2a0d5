//! The signed wire contract: messages (SPEC 2), signing (SPEC 3) and verification (SPEC 4).
//! No Kafka here: this is the part every other piece calls. Everything particular to one
//! message kind is its row in [`kinds`]; the rest is written once for all kinds. The layers,
//! each importing only those below it: [`kinds`] (the table, as data) and `checks` (the field
//! rules rows are written in), then [`messages`], [`signing`], [`verify`].

mod checks;
pub mod clock;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod json;
pub mod keys;
pub mod kinds;
pub mod limits;
pub mod messages;
pub mod nonce;
mod proto;
pub mod reason;
pub mod replay;
pub mod signing;
pub mod trust;
pub mod verify;
pub mod wire;

pub use clock::{Clock, FixedClock, SystemClock};
pub use messages::{AiEnvelope, ControlSigned, Kind, KindOf, Message};
pub use reason::{Reason, VerifyError};
pub use replay::Place;
pub use signing::{Signer, SigningDomains};
pub use trust::TrustStore;
pub use verify::{Admitted, Verifier, VerifierConfig};
