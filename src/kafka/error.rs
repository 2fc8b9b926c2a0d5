//! meshbus's Kafka errors: krafka's errors mapped onto a small typed enum, classified as
//! retriable or not by krafka's own classification and typed error codes (no string matching).
//! Messages never carry secrets: krafka's errors name operations, brokers and codes only.

use std::time::Duration;

/// Why talking to Kafka failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// Bad configuration (meshbus's or one krafka refused).
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// TLS set-up or handshake failed (untrusted CA, bad certificate, unreadable file).
    #[error("TLS: {0}")]
    Tls(String),
    /// SASL authentication failed (wrong user or password, mechanism not enabled).
    #[error("SASL authentication failed: {0}")]
    Auth(String),
    /// No answer in time, whichever step ran out of it: the TCP connect, the TLS handshake,
    /// the SASL exchange or a request (krafka's own timeouts, and "could not connect to any
    /// of ..." when the failure it reports was one). `after` is the bound when meshbus knows
    /// it, else zero.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: String,
        /// The timeout.
        after: Duration,
    },
    /// The client retried a record for its whole delivery budget without an answer. If
    /// `possibly_written`, the broker may hold it: sending it again could store it twice, so
    /// that case is not retriable (meshbus's SPEC 5 retries skip it).
    #[error("delivery timed out (possibly written: {possibly_written}): {detail}")]
    DeliveryTimeout {
        /// Whether a request carrying the record may have reached the broker.
        possibly_written: bool,
        /// What the client saw last.
        detail: String,
    },
    /// The broker refused, the connection broke, or a reply was malformed.
    #[error("broker: {detail}")]
    Broker {
        /// What happened.
        detail: String,
        /// Kafka's error code, when the broker sent one.
        code: Option<i16>,
        /// Whether trying again may succeed.
        retriable: bool,
    },
    /// The record (or batch) is larger than the broker accepts.
    #[error("record too large for the broker: {0}")]
    RecordTooLarge(String),
    /// Backpressure: the producer's unacknowledged bytes stayed at their bound
    /// (32 MiB, `produce::BUFFER_BYTES`) for the whole wait (the request timeout); nothing was
    /// sent. Not retried by meshbus: the caller decides whether to wait longer.
    #[error("producer buffer full: {bytes} more bytes did not fit in {limit} within {waited:?}")]
    BufferFull {
        /// The record's size.
        bytes: usize,
        /// The bound.
        limit: usize,
        /// How long the send waited.
        waited: Duration,
    },
    /// The client was closed.
    #[error("closed: {0}")]
    Closed(String),
    /// The record batch at a partition's position cannot be decoded (CRC mismatch, bad
    /// compression): fetching again returns the same bytes. The consumer dead-letters the
    /// place and seeks past it.
    #[error("undecodable record batch at {topic}/{partition} offset {offset}: {detail}")]
    UndecodableBatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What was wrong.
        detail: String,
    },
}

/// Kafka's MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE codes.
const MESSAGE_TOO_LARGE: i16 = 10;
const RECORD_LIST_TOO_LARGE: i16 = 18;

impl KafkaError {
    /// True when a retry may succeed (network, leadership, timeouts); false for TLS, auth,
    /// configuration and record-level refusals.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Timeout { .. } => true,
            KafkaError::DeliveryTimeout {
                possibly_written, ..
            } => !possibly_written,
            KafkaError::Broker { retriable, .. } => *retriable,
            _ => false,
        }
    }

    /// A stable short code for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            KafkaError::Config(_) => "config",
            KafkaError::Tls(_) => "tls",
            KafkaError::Auth(_) => "auth",
            KafkaError::Timeout { .. } => "timeout",
            KafkaError::DeliveryTimeout { .. } => "delivery_timeout",
            KafkaError::Broker { .. } => "broker",
            KafkaError::RecordTooLarge(_) => "record_too_large",
            KafkaError::BufferFull { .. } => "buffer_full",
            KafkaError::Closed(_) => "closed",
            KafkaError::UndecodableBatch { .. } => "undecodable_batch",
        }
    }

    /// A timeout whose bound krafka did not say gets `after`, the bound the caller set.
    pub(crate) fn timed_out_after(self, after: Duration) -> Self {
        match self {
            KafkaError::Timeout { op, after: zero } if zero.is_zero() => {
                KafkaError::Timeout { op, after }
            }
            other => other,
        }
    }

    pub(crate) fn config(var: &'static str, detail: impl Into<String>) -> Self {
        KafkaError::Config(crate::config::ConfigError {
            var,
            detail: detail.into(),
        })
    }
}

/// The rustls error somewhere in `e`'s source chain, if the failure was TLS.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{t:?}"));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    return Some(format!("{t:?}"));
                }
            }
        }
        cur = err.source();
    }
    None
}

impl From<krafka::KrafkaError> for KafkaError {
    fn from(e: krafka::KrafkaError) -> Self {
        use krafka::KrafkaError as K;
        if let Some(t) = tls_cause(&e) {
            return KafkaError::Tls(t);
        }
        // A timeout by kind, not by text: krafka's Timeout (aggregates such as "could not
        // connect to any of ..." are one when the failure they report was one) and a network
        // error of I/O kind TimedOut.
        if e.is_timeout() {
            let op = match e {
                K::Timeout { operation } => operation,
                other => other.to_string(),
            };
            return KafkaError::Timeout {
                op,
                after: Duration::ZERO,
            };
        }
        let retriable = e.is_retriable();
        match e {
            K::Auth { message, .. } => KafkaError::Auth(message),
            K::Config { message } => KafkaError::Config(crate::config::ConfigError {
                var: "kafka client",
                detail: message,
            }),
            K::DeliveryTimeout {
                possibly_written,
                message,
            } => KafkaError::DeliveryTimeout {
                possibly_written,
                detail: message,
            },
            K::Broker { code, message } => {
                let c = code.to_i16();
                if c == MESSAGE_TOO_LARGE || c == RECORD_LIST_TOO_LARGE {
                    return KafkaError::RecordTooLarge(format!("{code:?}: {message}"));
                }
                KafkaError::Broker {
                    detail: format!("{code:?}: {message}"),
                    code: Some(c),
                    retriable,
                }
            }
            K::Closed { message } => KafkaError::Closed(message),
            K::UndecodableBatch {
                topic,
                partition,
                offset,
                kind,
                message,
            } => KafkaError::UndecodableBatch {
                topic,
                partition,
                offset,
                detail: format!("{kind:?}: {message}"),
            },
            other => KafkaError::Broker {
                detail: other.to_string(),
                code: None,
                retriable,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_follows_krafka_and_too_large_is_its_own_kind() {
        let e: KafkaError = krafka::KrafkaError::Broker {
            code: krafka::error::ErrorCode::NotLeaderForPartition,
            message: "moved".into(),
        }
        .into();
        assert!(e.is_retriable(), "{e:?}");
        let e: KafkaError = krafka::KrafkaError::Broker {
            code: krafka::error::ErrorCode::MessageTooLarge,
            message: "big".into(),
        }
        .into();
        assert!(matches!(e, KafkaError::RecordTooLarge(_)), "{e:?}");
        assert!(!e.is_retriable());
        let e: KafkaError = krafka::KrafkaError::Auth {
            message: "bad credentials".into(),
            source: None,
        }
        .into();
        assert!(matches!(e, KafkaError::Auth(_)));
        assert_eq!(e.code(), "auth");
    }

    #[test]
    fn timeouts_are_typed_by_kind_not_text() {
        let e: KafkaError = krafka::KrafkaError::timeout("TLS handshake with b1:9093").into();
        assert!(matches!(e, KafkaError::Timeout { .. }), "{e:?}");
        assert!(e.is_retriable());
        assert_eq!(e.code(), "timeout");
        // The OS gave up (ETIMEDOUT), or a connection closed because a request timed out.
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect");
        let e: KafkaError = krafka::KrafkaError::network(io).into();
        assert!(matches!(e, KafkaError::Timeout { .. }), "{e:?}");
        // Text saying "timed out" on another kind is not a timeout.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "timed out");
        let e: KafkaError = krafka::KrafkaError::network(io).into();
        assert!(
            matches!(
                e,
                KafkaError::Broker {
                    retriable: true,
                    ..
                }
            ),
            "{e:?}"
        );
        // The bound is filled in only where krafka did not give one.
        let e = KafkaError::Timeout {
            op: "x".into(),
            after: Duration::ZERO,
        }
        .timed_out_after(Duration::from_secs(3));
        assert!(matches!(e, KafkaError::Timeout { after, .. } if after == Duration::from_secs(3)));
    }
}
