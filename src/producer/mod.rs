//! The signed producer (SPEC 5): typed sends that sign on the way out, a raw send, acks=all,
//! compression, the 1 MiB limit, retries with exponential backoff and jitter (backon) on
//! retriable errors only, and the circuit breaker. A refused send is always an error to the
//! caller, never a silent drop; `Ok` means the broker acknowledged the record (acks=all).

mod breaker;

pub use breaker::{BreakerState, CircuitBreaker};

use crate::config::Config;
use crate::contract::limits::MAX_RECORD_BYTES;
use crate::contract::messages::*;
use crate::contract::verify::{ACK_SIGNATURE_ALG_HEADER, ACK_SIGNATURE_HEADER};
use crate::contract::{Clock as _, Kind, Message, Signer};
use crate::kafka::{Client, KafkaError, Sender};
use crate::metrics::Metrics;
use backon::{ExponentialBuilder, Retryable};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset assigned by the broker.
    pub offset: i64,
}

/// Why a send failed. The record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The value is over 1 MiB; nothing was sent.
    #[error("record of {size} bytes is over the 1 MiB limit; not sent")]
    TooLarge {
        /// Value size.
        size: usize,
    },
    /// The circuit breaker is open; nothing was sent.
    #[error("circuit breaker open: send refused")]
    BreakerOpen,
    /// A typed send needs a signer.
    #[error("no signing key configured for signed sends")]
    NoSigner,
    /// The broker could not be reached or refused, after the allowed retries.
    #[error("send to {topic} failed after {attempts} attempt(s): {source}")]
    Transport {
        /// Topic.
        topic: String,
        /// Attempts made.
        attempts: usize,
        /// Last error.
        source: KafkaError,
    },
}

/// Publishes CyberMesh records. Share it behind an `Arc`.
pub struct Producer {
    sender: Sender,
    config: Config,
    signer: Option<Arc<Signer>>,
    metrics: Arc<Metrics>,
    breaker: CircuitBreaker,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer on `client`; `signer` is needed for the typed (signed) sends.
    pub fn new(
        client: Client,
        config: Config,
        signer: Option<Arc<Signer>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let p = &config.producer;
        let breaker =
            CircuitBreaker::new(p.breaker_failures, p.breaker_open_for, p.breaker_successes);
        Producer {
            sender: Sender::new(client, p.clone()),
            config,
            signer,
            metrics,
            breaker,
        }
    }

    /// Waits until every send accepted so far is acknowledged or has failed.
    pub async fn flush(&self) -> Result<(), KafkaError> {
        self.sender.flush().await
    }

    /// Flushes, then closes the connection's producer; later sends fail with
    /// `KafkaError::Closed`.
    pub async fn close(&self) -> Result<(), KafkaError> {
        self.sender.close().await
    }

    /// The breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn signer(&self) -> Result<&Signer, SendError> {
        self.signer.as_deref().ok_or(SendError::NoSigner)
    }

    /// Signs `msg` by its kind and sends it to its configured topic.
    pub async fn sign_and_send(&self, msg: Message) -> Result<Delivery, SendError> {
        let signed = self.signer()?.sign_message(msg);
        self.send_message(&signed).await
    }
    /// Signs and sends an anomaly to `ai.anomalies.v1`.
    pub async fn send_anomaly(&self, m: AnomalyEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::Anomaly(m)).await
    }
    /// Signs and sends evidence to `ai.evidence.v1`.
    pub async fn send_evidence(&self, m: EvidenceEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::Evidence(m)).await
    }
    /// Signs and sends a policy to `ai.policy.v1`.
    pub async fn send_policy(&self, m: PolicyEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::Policy(m)).await
    }
    /// Signs and sends a commit to `control.commits.v1` (key: height, 8 bytes BE).
    pub async fn send_commit(&self, m: CommitEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::Commit(m)).await
    }
    /// Signs and sends a policy update to `control.policy.v1` (key: policy_id).
    pub async fn send_policy_update(&self, m: PolicyUpdateEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::PolicyUpdate(m)).await
    }
    /// Signs and sends a reputation event to `control.reputation.v1`.
    pub async fn send_reputation(&self, m: ReputationEvent) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::Reputation(m)).await
    }
    /// Signs and sends an evidence request to `control.evidence.v1`.
    pub async fn send_evidence_request(
        &self,
        m: EvidenceRequestEvent,
    ) -> Result<Delivery, SendError> {
        self.sign_and_send(Message::EvidenceRequest(m)).await
    }
    /// Sends a policy ack to `control.policy.ack.v1` (key: policy_id); with a signer, adds the
    /// `ack-signature` headers of SPEC 3c.
    pub async fn send_policy_ack(&self, m: PolicyAckEvent) -> Result<Delivery, SendError> {
        self.send_message(&Message::PolicyAck(m)).await
    }

    /// Sends an already signed message to its configured topic with its SPEC 1 key.
    pub async fn send_message(&self, msg: &Message) -> Result<Delivery, SendError> {
        let value = msg.encode();
        let mut headers = BTreeMap::new();
        if let (Message::PolicyAck(_), Some(s)) = (msg, &self.signer) {
            headers.insert(
                ACK_SIGNATURE_HEADER.to_string(),
                s.sign_raw(&value).to_vec(),
            );
            headers.insert(ACK_SIGNATURE_ALG_HEADER.to_string(), b"ed25519".to_vec());
        }
        let topic = self.config.topic(msg.kind()).to_string();
        self.send(&topic, msg.kind().name(), msg.record_key(), value, headers)
            .await
    }

    /// Sends raw bytes (no signing, no verification) to `topic`.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<Delivery, SendError> {
        let kind = self
            .config
            .kind_of_topic(topic)
            .map(Kind::name)
            .unwrap_or("raw");
        self.send(topic, kind, key, value, headers).await
    }

    async fn send(
        &self,
        topic: &str,
        kind: &str,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<Delivery, SendError> {
        let labels = Metrics::topic_type(topic, kind);
        let result = self.send_inner(topic, key, value, headers).await;
        self.metrics
            .circuit_breaker_state
            .set(self.breaker.state() as i64);
        match &result {
            Ok(_) => self.metrics.messages_sent.get_or_create(&labels).inc(),
            Err(_) => self.metrics.messages_failed.get_or_create(&labels).inc(),
        };
        result
    }

    async fn send_inner(
        &self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<Delivery, SendError> {
        if value.len() > MAX_RECORD_BYTES {
            return Err(SendError::TooLarge { size: value.len() });
        }
        if !self.breaker.allow() {
            return Err(SendError::BreakerOpen);
        }
        let started = Instant::now();
        let size = value.len() as u64;
        let timestamp_ms = crate::contract::clock::SystemClock.now_ms();
        let p = &self.config.producer;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(p.retry_backoff)
            .with_max_delay(p.retry_backoff_max)
            .with_factor(2.0)
            .with_max_times(p.max_retries)
            .with_jitter();
        let attempts = AtomicUsize::new(0);
        let value = Some(value);
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let (partition, offset) = self
                .sender
                .send(topic, key.clone(), value.clone(), &headers, timestamp_ms)
                .await?;
            Ok(Delivery {
                topic: topic.to_string(),
                partition,
                offset,
            })
        })
        .retry(backoff)
        .when(|e: &KafkaError| e.is_retriable())
        .notify(|e, after| tracing::warn!(topic, error = %e, retry_in = ?after, "send failed; retrying"))
        .await;
        self.finish(
            topic,
            started,
            size,
            attempts.load(Ordering::Relaxed),
            result,
        )
    }

    /// Breaker, metrics and error shape for a finished send.
    fn finish(
        &self,
        topic: &str,
        started: Instant,
        size: u64,
        attempts: usize,
        result: Result<Delivery, KafkaError>,
    ) -> Result<Delivery, SendError> {
        match result {
            Ok(d) => {
                self.breaker.on_success();
                self.metrics
                    .bytes_sent
                    .get_or_create(&Metrics::topic(topic))
                    .inc_by(size);
                self.metrics
                    .send_latency
                    .get_or_create(&Metrics::topic(topic))
                    .observe(started.elapsed().as_secs_f64());
                Ok(d)
            }
            Err(source) => {
                self.breaker.on_failure();
                Err(SendError::Transport {
                    topic: topic.to_string(),
                    attempts,
                    source,
                })
            }
        }
    }
}
