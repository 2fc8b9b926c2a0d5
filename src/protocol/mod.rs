//! The Kafka APIs rskafka 0.6 lacks (consumer groups, offset commit, idempotent produce), built
//! on the kafka-protocol crate: a connection with TLS and SASL ([`Connection`]), and one file per
//! API family with the versions meshbus speaks pinned there. No hand-written wire bytes.

mod connection;
pub mod group;
pub mod offsets;
pub mod produce;
mod sasl;

pub use connection::Connection;

use crate::config::Config;
use crate::transport::TransportError;
use kafka_protocol::error::ResponseError;
use std::sync::Arc;

/// Connects to brokers with the TLS and SASL settings of one [`Config`].
#[derive(Clone)]
pub struct Cluster {
    config: Config,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Prepares connections for `config` (builds the TLS configuration once).
    pub fn new(config: &Config) -> Result<Cluster, TransportError> {
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(crate::transport::client_config(t)?)),
            None => None,
        };
        Ok(Cluster {
            config: config.clone(),
            tls,
        })
    }

    /// Connects to `addr` (host:port).
    pub async fn connect(&self, addr: &str) -> Result<Arc<Connection>, TransportError> {
        Connection::connect(addr, &self.config, self.tls.clone()).await
    }

    /// Connects to the first bootstrap broker that answers.
    pub async fn bootstrap(&self) -> Result<Arc<Connection>, TransportError> {
        let mut last = None;
        for b in &self.config.brokers {
            match self.connect(b).await {
                Ok(c) => return Ok(c),
                Err(e @ (TransportError::Auth(_) | TransportError::Tls(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TransportError::Broker {
            detail: "no broker configured".into(),
            retriable: false,
        }))
    }
}

/// A kafka-protocol string from a `&str`.
pub(crate) fn s(v: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(v.to_string())
}

/// The protocol error for a non-zero error code.
pub fn response_error(code: i16) -> Option<ResponseError> {
    if code == 0 {
        None
    } else {
        Some(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
    }
}

/// A [`TransportError`] for an error code returned by `op`.
pub fn api_error(op: &str, code: i16) -> TransportError {
    let e = response_error(code).unwrap_or(ResponseError::UnknownServerError);
    TransportError::Broker {
        detail: format!("{op}: {e:?} ({code})"),
        retriable: e.is_retriable(),
    }
}
