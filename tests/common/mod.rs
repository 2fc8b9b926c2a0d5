pub mod broker;
pub mod mesh;
pub mod proxy;
pub mod vectors;
