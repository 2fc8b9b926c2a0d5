//! The signed producer (SPEC 5): typed sends that sign on the way out, a raw send, acks=all,
//! compression, the 1 MiB limit, retries with exponential backoff and jitter (backon) on
//! retriable errors only, and the circuit breaker. A refused send is always an error to the
//! caller, never a silent drop; `Ok` means the broker acknowledged the record (acks=all).
//! A handle counts its sends in flight, so [`Producer::flush`] waits for exactly what was
//! accepted and [`Producer::close`] refuses what comes after with [`SendError::Closed`]; the
//! optional rate limit (`throttle.rs`) makes sends wait, never drop.

mod breaker;
mod lifecycle;
mod throttle;

pub use breaker::{BreakerState, CircuitBreaker};
pub use lifecycle::SendCounts;

use crate::config::Config;
use crate::contract::limits::MAX_RECORD_BYTES;
use crate::contract::messages::*;
use crate::contract::verify::{ACK_SIGNATURE_ALG_HEADER, ACK_SIGNATURE_HEADER};
use crate::contract::{Clock as _, Kind, Message, Signer};
use crate::kafka::{Client, KafkaError, Sender};
use crate::metrics::Metrics;
use backon::{ExponentialBuilder, Retryable};
use lifecycle::Lifecycle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use throttle::Throttle;

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
    /// The producer was closed (or is shutting down); nothing was sent.
    #[error("producer closed: send refused")]
    Closed,
    /// Backpressure: the producer's unacknowledged bytes stayed at their 32 MiB bound for the
    /// whole wait (`KAFKA_REQUEST_TIMEOUT_MS`); nothing was sent.
    #[error("producer buffer full for {waited:?} ({bytes} bytes did not fit); not sent")]
    Backpressure {
        /// The record's size.
        bytes: usize,
        /// How long the send waited.
        waited: std::time::Duration,
    },
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
    sender: Arc<Sender>,
    config: Config,
    signer: std::sync::RwLock<Option<Arc<Signer>>>,
    metrics: Arc<Metrics>,
    breaker: CircuitBreaker,
    throttle: Throttle,
    lifecycle: Lifecycle,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("signer", &self.current_signer())
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
        let sender = Arc::new(Sender::new(client, config.producer.clone()));
        Self::on_sender(sender, config, signer, metrics)
    }

    fn on_sender(
        sender: Arc<Sender>,
        config: Config,
        signer: Option<Arc<Signer>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let p = &config.producer;
        Producer {
            breaker: CircuitBreaker::new(
                p.breaker_failures,
                p.breaker_open_for,
                p.breaker_successes,
            ),
            throttle: Throttle::new(p.max_records_per_sec, p.max_bytes_per_sec),
            lifecycle: Lifecycle::default(),
            sender,
            config,
            signer: std::sync::RwLock::new(signer),
            metrics,
        }
    }

    /// An unsigned, unthrottled handle on the same connection producer (one producer id, one
    /// set of batches) with its own breaker and its own lifecycle: what a consumer writes dead
    /// letters with, so closing the application's handle does not stop dead-lettering.
    pub fn dead_letter_handle(&self) -> Producer {
        let mut config = self.config.clone();
        config.producer.max_records_per_sec = None;
        config.producer.max_bytes_per_sec = None;
        Self::on_sender(self.sender.clone(), config, None, self.metrics.clone())
    }

    /// Waits until every send this handle accepted so far is acknowledged or has failed.
    pub async fn flush(&self) -> Result<(), KafkaError> {
        self.lifecycle.idle().await;
        self.sender.flush().await
    }

    /// Refuses later sends with [`SendError::Closed`], flushes, then closes the connection's
    /// producer (handles sharing it, such as a [`Producer::dead_letter_handle`], are then
    /// refused as well).
    pub async fn close(&self) -> Result<(), KafkaError> {
        self.stop_accepting();
        self.flush().await?;
        self.sender.close().await
    }

    /// Refuses later sends with [`SendError::Closed`] without waiting for anything (the first
    /// step of a graceful stop; [`Producer::flush`] is the second).
    pub fn stop_accepting(&self) {
        self.lifecycle.close();
    }

    /// True once [`Producer::close`] or [`Producer::stop_accepting`] was called.
    pub fn is_closed(&self) -> bool {
        self.lifecycle.is_closed()
    }

    /// What became of this handle's sends so far.
    pub fn counts(&self) -> SendCounts {
        self.lifecycle.counts()
    }

    /// The breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn current_signer(&self) -> Option<Arc<Signer>> {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn signer(&self) -> Result<Arc<Signer>, SendError> {
        self.current_signer().ok_or(SendError::NoSigner)
    }

    /// Switches the signing key (a key rotation): sends signed from now on use `signer`;
    /// sends already signed go out as they are, so nothing is dropped or failed.
    pub fn set_signer(&self, signer: Signer) {
        *self.signer.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(signer));
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
        if let (Message::PolicyAck(_), Some(s)) = (msg, self.current_signer()) {
            headers.insert(
                ACK_SIGNATURE_HEADER.to_string(),
                s.sign_raw(&value).to_vec(),
            );
            headers.insert(ACK_SIGNATURE_ALG_HEADER.to_string(), b"ed25519".to_vec());
        }
        let topic = self.config.topic(msg.kind()).to_string();
        self.send(
            &topic,
            msg.kind().name(),
            msg.record_key(),
            Some(value),
            headers,
        )
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
        self.send_raw_value(topic, key, Some(value), headers).await
    }

    /// Sends raw bytes to `topic`; a `None` value is Kafka's null value.
    pub async fn send_raw_value(
        &self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
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
        value: Option<Vec<u8>>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<Delivery, SendError> {
        let labels = Metrics::topic_type(topic, kind);
        let Some(in_flight) = self.lifecycle.enter() else {
            self.metrics.messages_failed.get_or_create(&labels).inc();
            return Err(SendError::Closed);
        };
        let result = self.send_inner(topic, key, value, headers).await;
        in_flight.finish(result.is_ok());
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
        value: Option<Vec<u8>>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<Delivery, SendError> {
        let size = value.as_ref().map_or(0, Vec::len);
        if size > MAX_RECORD_BYTES {
            return Err(SendError::TooLarge { size });
        }
        if !self.throttle.is_unlimited() {
            let waited = self.throttle.admit(size).await;
            self.metrics
                .producer_throttled_seconds
                .get_or_create(&Metrics::topic(topic))
                .inc_by(waited.as_secs_f64());
        }
        if !self.breaker.allow() {
            return Err(SendError::BreakerOpen);
        }
        let started = Instant::now();
        let size = size as u64;
        let timestamp_ms = crate::contract::clock::SystemClock.now_ms();
        let p = &self.config.producer;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(p.retry_backoff)
            .with_max_delay(p.retry_backoff_max)
            .with_factor(2.0)
            .with_max_times(p.max_retries)
            .with_jitter();
        let attempts = AtomicUsize::new(0);
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
        // A delivery timeout means the client already retried the same idempotent batch for
        // the whole of KAFKA_DELIVERY_TIMEOUT_MS: that send has failed (SPEC 8).
        .when(|e: &KafkaError| {
            e.is_retriable() && !matches!(e, KafkaError::DeliveryTimeout { .. })
        })
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
            Err(KafkaError::Closed(_)) => Err(SendError::Closed),
            // A full buffer says the broker is slow, not that it failed: the breaker is left
            // alone.
            Err(KafkaError::BufferFull { bytes, waited, .. }) => {
                Err(SendError::Backpressure { bytes, waited })
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
