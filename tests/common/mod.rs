pub mod broker;
pub mod cli;
pub mod fake_broker;
pub mod mesh;
pub mod proxy;
#[path = "../../src/cli/sample.rs"]
pub mod sample;
pub mod vectors;
