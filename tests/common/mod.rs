pub mod broker;
pub mod checker;
pub mod child;
pub mod cli;
pub mod fake_broker;
pub mod mesh;
pub mod proxy;
#[path = "../../src/cli/sample.rs"]
pub mod sample;
pub mod toxiproxy;
pub mod vectors;

/// Sends logs to the running test's captured output (shown only when it fails), once per
/// binary: `RUST_LOG`'s choice, else warnings and krafka's producer and metadata decisions
/// (retries, leader moves, refreshes), so a fault test that fails on CI says what the client
/// did.
#[allow(dead_code)]
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,krafka::producer=debug,krafka::metadata=debug")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}
