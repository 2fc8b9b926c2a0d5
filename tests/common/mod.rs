pub mod broker;
pub mod vectors;
