//! Code generated from `proto/`: prost's messages (public as [`super::messages`]' list), and
//! build.rs's [`super::wire::GoDecode`] impls.
#![allow(missing_docs, clippy::all, unreachable_pub)]

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
