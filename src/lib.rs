//! meshbus: a pure-Rust Kafka client for the CyberMesh signed bus contract.
//!
//! - [`contract`]: messages, signing and the one verification path (SPEC 2-4).
//! - [`config`]: environment and configuration (SPEC 8).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod consumer;
pub mod contract;
pub mod dlq;
pub mod metrics;
pub mod producer;
pub mod protocol;
pub mod transport;
