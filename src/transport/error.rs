//! Transport errors, classified as retriable or not. Never carry secrets.

use std::time::Duration;

/// Why talking to the broker failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS set-up or handshake failed (untrusted CA, bad certificate, unreadable file).
    #[error("TLS: {0}")]
    Tls(String),
    /// SASL authentication failed (wrong user or password, mechanism not enabled).
    #[error("SASL authentication failed: {0}")]
    Auth(String),
    /// No answer within the request timeout.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The broker refused or the connection broke.
    #[error("broker: {detail}")]
    Broker {
        /// What happened.
        detail: String,
        /// Whether trying again may succeed.
        retriable: bool,
    },
}

impl TransportError {
    /// True when a retry may succeed (network, leadership, timeouts); false for TLS, auth,
    /// configuration and record-level refusals.
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Timeout { .. } => true,
            TransportError::Broker { retriable, .. } => *retriable,
            _ => false,
        }
    }
}

impl From<rskafka::client::error::Error> for TransportError {
    fn from(e: rskafka::client::error::Error) -> Self {
        use rskafka::client::error::{Error as E, ProtocolError as P};
        match e {
            E::Connection(c) => from_connection(c),
            E::ServerError {
                protocol_error,
                error_message,
                ..
            } => {
                let retriable = matches!(
                    protocol_error,
                    P::NotLeaderOrFollower
                        | P::LeaderNotAvailable
                        | P::RequestTimedOut
                        | P::NetworkException
                        | P::NotEnoughReplicas
                        | P::NotEnoughReplicasAfterAppend
                        | P::UnknownTopicOrPartition
                        | P::CoordinatorNotAvailable
                        | P::NotCoordinator
                        | P::CoordinatorLoadInProgress
                        | P::KafkaStorageError
                        | P::FencedLeaderEpoch
                        | P::UnknownLeaderEpoch
                        | P::OffsetNotAvailable
                        | P::PreferredLeaderNotAvailable
                        | P::ThrottlingQuotaExceeded
                        | P::UnknownServerError
                );
                TransportError::Broker {
                    detail: format!(
                        "{protocol_error:?}{}",
                        error_message.map(|m| format!(": {m}")).unwrap_or_default()
                    ),
                    retriable,
                }
            }
            E::Timeout => TransportError::Timeout {
                op: "request",
                after: Duration::ZERO,
            },
            other => TransportError::Broker {
                detail: other.to_string(),
                retriable: true,
            },
        }
    }
}

fn from_connection(c: rskafka::ConnectionError) -> TransportError {
    use rskafka::ConnectionError as C;
    match c {
        C::SaslFailed(e) => TransportError::Auth(e.to_string()),
        other => {
            let text = other.to_string();
            if let Some(tls) = tls_cause(&other) {
                TransportError::Tls(tls)
            } else {
                TransportError::Broker {
                    detail: text,
                    retriable: true,
                }
            }
        }
    }
}

/// Finds a rustls error in an error's source chain.
pub(crate) fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(r.to_string());
                }
            }
        }
        cur = err.source();
    }
    None
}
