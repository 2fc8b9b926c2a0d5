//! Configuration: the deployment environment and (with the transport) the SPEC 8 variables.

mod environment;

pub use environment::Environment;
