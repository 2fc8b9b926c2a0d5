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

/// Sends `RUST_LOG`-filtered logs to the running test's captured output (once per binary).
#[allow(dead_code)]
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
