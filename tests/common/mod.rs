pub mod broker;
pub mod cli;
pub mod mesh;
pub mod proxy;
pub mod vectors;
