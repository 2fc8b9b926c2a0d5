//! meshbus: a pure-Rust Kafka client for the CyberMesh signed bus contract.
//!
//! # Modules
//!
//! - [`contract`]: the wire contract, without I/O: the per-kind table (`contract/kinds.rs`, one
//!   row per message kind, from which [`contract::Kind`] and [`contract::Message`] and their
//!   signing and verification dispatch are generated), signing ([`contract::Signer`]), keys and the
//!   trust store, nonces, the replay guard, reason codes, and the one verification path
//!   ([`contract::Verifier`]) that the library, the command and the fuzz targets share.
//! - [`config`]: the SPEC 8 configuration from the environment or a typed builder, with the
//!   staging and production guards; secrets that never print.
//! - [`kafka`]: the one module that names the Kafka client (krafka): the connection pool
//!   ([`kafka::Client`]), the produce path, the group member, typed [`kafka::KafkaError`]s.
//! - [`producer`]: signed sends ([`producer::Producer`]): acks=all, retries, circuit breaker,
//!   rate limit, byte bound, flush and close.
//! - [`consumer`]: the verifying group consumer ([`consumer::Consumer`]) and its stages.
//! - [`dlq`]: SPEC 7 dead letters ([`dlq::DeadLetter`]): build, write, read back, replay.
//! - [`mesh`]: one role's client under one lifecycle ([`mesh::Mesh`]): pool, producer,
//!   consumers, metrics, trust reload, readiness, graceful shutdown.
//! - [`metrics`]: the SPEC 9 metrics and the metrics address (`/metrics`, `/healthz`,
//!   `/readyz`).
//!
//! # The path of a record
//!
//! Out: a role calls `mesh.producer().send_anomaly(m)`; the [`contract::Signer`] fills the
//! envelope (timestamp, content hash, nonce, producer id, signature); the
//! [`producer::Producer`] checks the 1 MiB limit, waits for the rate limit and the byte bound,
//! asks the circuit breaker, and hands the bytes to `kafka::Sender`, which batches them to the
//! partition leader (acks=all, idempotent) and returns the offset; retriable failures are
//! retried with backoff.
//!
//! In: `kafka::GroupConsumer::poll` fetches (**fetch**); the poll loop hands each record to its
//! partition's worker in offset order; the worker runs the [`contract::Verifier`] (**verify**:
//! size, decode, structure, clock, hash, signature, producer, allowlist, payload, replay), then
//! the role's handler with retries (**handle**); a record that fails either goes to the DLQ
//! topic as a [`dlq::DeadLetter`] and waits until the broker acknowledged it
//! (**dead-letter**); only then is its offset marked handled in the offset tracker
//! (**mark**), the one place that commits (on its interval, on revocation, on shutdown).
//! Nothing is committed past a record that was neither handled nor dead-lettered.
// One place with `unsafe` in the crate, allowed where it is: the vector calls of the JSON
// string scan (`contract/verify/payload.rs`): SSE2, the x86_64 baseline, or AVX2 where the
// processor was found to have it.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![deny(unreachable_pub)]

// Lets files shared with the command and the tests (the CLI's samples) name the crate
// `meshbus` inside its own unit tests too.
extern crate self as meshbus;

/// The `meshbus` command (`src/main.rs` is `main` over it). Not library API: it lives in the
/// library so that the static binary's own crate is `main` alone, the one crate built for
/// speed over a library built for size (`scripts/static-build`).
#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod consumer;
pub mod contract;
pub mod dlq;
pub mod kafka;
pub mod mesh;
pub mod metrics;
pub mod producer;

/// The README's examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
