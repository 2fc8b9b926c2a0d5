//! Transport: TLS (rustls, ring), SASL (SCRAM-SHA-512/256, PLAIN) and bounded timeouts around
//! the rskafka data plane. rskafka 0.6 has no request timeout: every call here is bounded by
//! `KAFKA_REQUEST_TIMEOUT_MS`, so a blackholed broker cannot hang a caller.

mod error;
pub(crate) use error::tls_cause;
mod tls;

pub use error::TransportError;
pub use tls::client_config;
pub(crate) use tls::server_name;

use crate::config::{Config, SaslMechanism};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Runs `fut` with the request timeout; `op` names it in the error.
pub async fn bounded<T, E>(
    timeout: Duration,
    op: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, TransportError>
where
    TransportError: From<E>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(TransportError::from),
        Err(_) => Err(TransportError::Timeout { op, after: timeout }),
    }
}

/// An rskafka client builder with TLS, SASL and internal retries bounded by `deadline` (so
/// meshbus's own retry policy, SPEC 5, is the one in charge).
fn builder(
    config: &Config,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    deadline: Duration,
) -> ClientBuilder {
    let backoff = rskafka::BackoffConfig {
        deadline: Some(deadline),
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        ..Default::default()
    };
    let mut b = ClientBuilder::new(config.brokers.clone())
        .client_id(format!("meshbus-node-{}", config.node_id))
        .backoff_config(backoff);
    if let Some(t) = tls_config {
        b = b.tls_config(t);
    }
    if let Some(sasl) = &config.sasl {
        let creds = Credentials::new(sasl.username.clone(), sasl.password.expose().to_string());
        b = b.sasl_config(match sasl.mechanism {
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(creds),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(creds),
            SaslMechanism::Plain => SaslConfig::Plain(creds),
        });
    }
    b
}

/// The SASL part of an rskafka bootstrap error (it names the broker's reason, never secrets).
fn sasl_detail(text: &str) -> String {
    text.find("Sasl handshake failed")
        .map(|i| text[i..].chars().take(300).collect())
        .unwrap_or_else(|| "authentication refused".into())
}

/// A connected rskafka client plus the settings it was built from.
#[derive(Clone)]
pub struct Transport {
    client: Arc<Client>,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Connects to the bootstrap brokers with TLS and SASL as configured. TLS and credential
    /// problems fail at once with a typed error; an unreachable broker fails after the request
    /// timeout.
    pub async fn connect(config: &Config) -> Result<Transport, TransportError> {
        config.validate()?;
        let timeout = config.request_timeout;
        let mut tls_config = None;
        if let Some(tls) = &config.tls {
            let c = Arc::new(tls::client_config(tls)?);
            // Handshake once ourselves: an untrusted CA or bad certificate is a clear, immediate
            // error instead of rskafka retrying until its deadline.
            tls::preflight(&config.brokers, c.clone(), timeout).await?;
            tls_config = Some(c);
        }
        // rskafka retries a failed bootstrap (SASL included) until its deadline. A one-attempt
        // probe (zero deadline) first turns bad credentials into an immediate `Auth` error.
        let probe = builder(config, tls_config.clone(), Duration::ZERO).build();
        if let Ok(Err(e)) = tokio::time::timeout(timeout, probe).await {
            let text = e.to_string();
            if text.contains("Sasl handshake failed") {
                return Err(TransportError::Auth(sasl_detail(&text)));
            }
        }
        let builder = builder(config, tls_config, timeout);
        let client = bounded(timeout, "connect", builder.build()).await?;
        Ok(Transport {
            client: Arc::new(client),
            timeout,
        })
    }

    /// The rskafka client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Creates a topic (ignores "already exists").
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), TransportError> {
        let ctl = self.client.controller_client()?;
        match bounded(
            self.timeout,
            "create_topic",
            ctl.create_topic(topic, partitions, 1, 5_000),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(TransportError::Broker { detail, .. }) if detail.contains("TopicAlreadyExists") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Number of partitions of `topic`.
    pub async fn partitions(&self, topic: &str) -> Result<i32, TransportError> {
        let topics = bounded(self.timeout, "metadata", self.client.list_topics()).await?;
        topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as i32)
            .ok_or_else(|| TransportError::Broker {
                detail: format!("topic {topic} does not exist"),
                retriable: true,
            })
    }
}
