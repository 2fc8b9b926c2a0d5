//! meshbus: a pure-Rust Kafka client for the CyberMesh signed bus contract.
//!
//! - [`contract`]: messages, signing and the one verification path (SPEC 2-4).
//! - [`config`]: environment and configuration (SPEC 8).
//! - [`kafka`]: the one module that names the Kafka client (connections, produce, groups).
//! - [`producer`]: signed sends with SPEC 5 retries and circuit breaker.
//! - [`consumer`]: the verifying group consumer (verify, handle, dead-letter, commit).
//! - [`dlq`]: SPEC 7 dead letters.
//! - [`metrics`]: the SPEC 9 metrics.
//! - [`mesh`]: one handle bundling a role's connections, producer, consumers and metrics under
//!   one lifecycle (start, graceful shutdown).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod consumer;
pub mod contract;
pub mod dlq;
pub mod kafka;
pub mod mesh;
pub mod metrics;
pub mod producer;
