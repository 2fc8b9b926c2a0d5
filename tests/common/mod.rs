pub mod broker;
pub mod mesh;
pub mod vectors;
