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

pub use breaker::BreakerState;
pub(crate) use breaker::CircuitBreaker;
pub use lifecycle::SendCounts;

use crate::config::Config;
use crate::contract::limits::MAX_RECORD_BYTES;
use crate::contract::messages::*;
use crate::contract::{Clock as _, Kind, Message, Signer};
use crate::kafka::{Client, KafkaError, Sender};
use crate::metrics::Metrics;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use lifecycle::Lifecycle;
use std::collections::BTreeMap;
use std::future::Future;
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
#[non_exhaustive]
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

impl SendError {
    /// A stable reason code: the variant (`too_large`, `breaker_open`, `no_signer`, `closed`,
    /// `backpressure`), or `transport/` and the Kafka error's code.
    pub fn code(&self) -> std::borrow::Cow<'static, str> {
        match self {
            SendError::TooLarge { .. } => "too_large".into(),
            SendError::BreakerOpen => "breaker_open".into(),
            SendError::NoSigner => "no_signer".into(),
            SendError::Closed => "closed".into(),
            SendError::Backpressure { .. } => "backpressure".into(),
            SendError::Transport { source, .. } => format!("transport/{}", source.code()).into(),
        }
    }
}

/// Publishes CyberMesh records. Share it behind an `Arc`.
pub struct Producer {
    core: Arc<Core>,
    signer: std::sync::RwLock<Option<Arc<Signer>>>,
    throttle: Throttle,
    lifecycle: Arc<Lifecycle>,
}

/// What a send still needs after it was queued: the connection's sender, the retry settings,
/// the breaker and the metrics.
struct Core {
    sender: Arc<Sender>,
    config: Config,
    metrics: Arc<Metrics>,
    breaker: CircuitBreaker,
    /// Metric handles per (topic, type), looked up once instead of once per record.
    send_metrics: std::sync::RwLock<Vec<Arc<SendMetrics>>>,
}

/// Most (topic, type) pairs whose metric handles are kept; past it a send looks its metrics
/// up each time (the CLI's raw sends may name any number of topics).
const SEND_METRICS_KEPT: usize = 64;

/// One (topic, type)'s send metrics.
struct SendMetrics {
    /// The topic, shared by every send to it.
    topic: String,
    kind: &'static str,
    /// Looked up by a raw send (its type from its topic), not by a typed one.
    raw: bool,
    sent: prometheus_client::metrics::counter::Counter,
    failed: prometheus_client::metrics::counter::Counter,
    bytes: prometheus_client::metrics::counter::Counter,
    latency: prometheus_client::metrics::histogram::Histogram,
}

impl Core {
    /// The metric handles of sends to `topic` of type `kind`; `None` for a raw send, whose
    /// type is the kind its topic carries, or `raw` (worked out once per topic, not per send).
    fn send_metrics(&self, topic: &str, kind: Option<&'static str>) -> Arc<SendMetrics> {
        let find = |kept: &[Arc<SendMetrics>]| {
            kept.iter()
                .find(|m| {
                    m.raw == kind.is_none() && kind.is_none_or(|k| m.kind == k) && m.topic == topic
                })
                .cloned()
        };
        if let Some(m) = find(&self.send_metrics.read().unwrap_or_else(|p| p.into_inner())) {
            return m;
        }
        let raw = kind.is_none();
        let kind = kind.unwrap_or_else(|| {
            self.config
                .kind_of_topic(topic)
                .map(Kind::name)
                .unwrap_or("raw")
        });
        let labels = Metrics::topic_type(topic, kind);
        let topic_label = Metrics::topic(topic);
        let m = &self.metrics;
        let made = Arc::new(SendMetrics {
            topic: topic.to_string(),
            kind,
            raw,
            sent: m.messages_sent.get_or_create(&labels).clone(),
            failed: m.messages_failed.get_or_create(&labels).clone(),
            bytes: m.bytes_sent.get_or_create(&topic_label).clone(),
            latency: m.send_latency.get_or_create(&topic_label).clone(),
        });
        let mut kept = self.send_metrics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = find(&kept) {
            return m;
        }
        if kept.len() < SEND_METRICS_KEPT {
            kept.push(made.clone());
        }
        made
    }
}

/// A send that was queued: awaiting it gives where the broker put the record, or why it was
/// not acknowledged after the allowed retries. Produce order is queue order, whatever order
/// these are awaited in. Dropping one does not cancel the send (the record is still
/// delivered, and [`Producer::flush`] still waits for it); it only discards the answer, and
/// the send counts as failed in [`Producer::counts`].
#[must_use = "a dropped PendingDelivery discards the acknowledgement; the record is still sent"]
pub struct PendingDelivery {
    state: Answer,
}

/// Where a [`PendingDelivery`] is: the common path (queued once, acknowledged) holds the
/// record inline and allocates nothing; only a retry boxes the future that re-queues it.
// The large variant is the common one: boxing it is the allocation per record this avoids.
#[allow(clippy::large_enum_variant)]
enum Answer {
    /// Queued, waiting for the broker's answer.
    Waiting {
        queued: crate::kafka::Queued,
        send: Outgoing,
        in_flight: lifecycle::InFlight,
    },
    /// The first answer was a retriable failure: the record is queued again.
    Retrying(std::pin::Pin<Box<dyn Future<Output = Result<Delivery, SendError>> + Send>>),
    /// The answer was given.
    Done,
}

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery").finish_non_exhaustive()
    }
}

impl Future for PendingDelivery {
    type Output = Result<Delivery, SendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            match &mut this.state {
                Answer::Waiting { queued, .. } => {
                    let landed = std::task::ready!(std::pin::Pin::new(queued).poll(cx));
                    let Answer::Waiting {
                        send, in_flight, ..
                    } = std::mem::replace(&mut this.state, Answer::Done)
                    else {
                        unreachable!("matched as waiting above")
                    };
                    match landed {
                        Ok((partition, offset)) => {
                            send.count(in_flight, true);
                            return Poll::Ready(Ok(send.delivery(partition, offset)));
                        }
                        Err(e) => this.state = Answer::Retrying(Box::pin(send.retry(e, in_flight))),
                    }
                }
                Answer::Retrying(retry) => {
                    let result = std::task::ready!(retry.as_mut().poll(cx));
                    this.state = Answer::Done;
                    return Poll::Ready(result);
                }
                Answer::Done => panic!("PendingDelivery polled after it gave its answer"),
            }
        }
    }
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
            throttle: Throttle::new(p.max_records_per_sec, p.max_bytes_per_sec),
            lifecycle: Arc::default(),
            signer: std::sync::RwLock::new(signer),
            core: Arc::new(Core {
                breaker: CircuitBreaker::new(
                    p.breaker_failures,
                    p.breaker_open_for,
                    p.breaker_successes,
                ),
                sender,
                config,
                metrics,
                send_metrics: Default::default(),
            }),
        }
    }

    /// An unsigned, unthrottled handle on the same connection producer (one producer id, one
    /// set of batches) with its own breaker and its own lifecycle: what a consumer writes dead
    /// letters with, so closing the application's handle does not stop dead-lettering.
    pub(crate) fn dead_letter_handle(&self) -> Producer {
        let mut config = self.core.config.clone();
        config.producer.max_records_per_sec = None;
        config.producer.max_bytes_per_sec = None;
        Self::on_sender(
            self.core.sender.clone(),
            config,
            None,
            self.core.metrics.clone(),
        )
    }

    /// The number of partitions of `topic`, from the metadata this producer routes by. The
    /// first call for a topic fetches its leaders (and sets the producer up), so a first send
    /// does not wait for them; Java's `partitionsFor`.
    pub async fn partitions(&self, topic: &str) -> Result<i32, KafkaError> {
        self.core.sender.partitions(topic).await
    }

    /// Waits until every send this handle accepted so far is acknowledged or has failed.
    pub async fn flush(&self) -> Result<(), KafkaError> {
        self.lifecycle.idle().await;
        self.core.sender.flush().await
    }

    /// Refuses later sends with [`SendError::Closed`], flushes, then closes the connection's
    /// producer (handles sharing it, such as the mesh's dead-letter handle, are then
    /// refused as well).
    pub async fn close(&self) -> Result<(), KafkaError> {
        self.stop_accepting();
        self.flush().await?;
        self.core.sender.close().await
    }

    /// Refuses later sends with [`SendError::Closed`] without waiting for anything (the first
    /// step of a graceful stop; [`Producer::flush`] is the second).
    pub fn stop_accepting(&self) {
        self.lifecycle.close();
    }

    /// True once [`Producer::close`] or [`Producer::stop_accepting`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lifecycle.is_closed()
    }

    /// What became of this handle's sends so far.
    pub fn counts(&self) -> SendCounts {
        self.lifecycle.counts()
    }

    /// The breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.core.breaker.state()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.config
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
        self.sign_and_enqueue(msg).await?.await
    }
    /// Signs `msg` by its kind and queues it for its configured topic: returns once it is
    /// queued; the [`PendingDelivery`] gives the broker's answer.
    pub async fn sign_and_enqueue(&self, msg: Message) -> Result<PendingDelivery, SendError> {
        let signed = self.signer()?.sign_message(msg);
        self.enqueue_message(&signed).await
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
        self.enqueue_message(msg).await?.await
    }

    /// Queues an already signed message for its configured topic with its SPEC 1 key (a
    /// header-signed kind, a policy ack, gets its signature headers here from the signer:
    /// [`Signer::record_headers`](crate::contract::Signer::record_headers)).
    pub async fn enqueue_message(&self, msg: &Message) -> Result<PendingDelivery, SendError> {
        let value = msg.encode();
        let headers = self
            .current_signer()
            .map(|s| s.record_headers(msg.kind(), &value))
            .unwrap_or_default();
        let topic = self.core.config.topic(msg.kind()).to_string();
        self.enqueue(
            &topic,
            Some(msg.kind().name()),
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
        self.enqueue_raw(topic, key, value, headers).await?.await
    }

    /// Queues raw bytes for `topic` (a `None` value is Kafka's null value) and returns once
    /// they are queued: what pipelines sends without a task per record. The
    /// [`PendingDelivery`] resolves to the broker's answer, after the same retries as
    /// [`Producer::send_raw`]; the error here is a send refused before it was queued.
    pub async fn enqueue_raw(
        &self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<PendingDelivery, SendError> {
        self.enqueue(topic, None, key, value, headers).await
    }

    /// The one send path: admit (gate, size, throttle, breaker), queue (retrying what failed
    /// before the record was queued), then the answer, which re-queues a record whose
    /// delivery failed with a retriable error.
    async fn enqueue(
        &self,
        topic: &str,
        kind: Option<&'static str>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: BTreeMap<String, Vec<u8>>,
    ) -> Result<PendingDelivery, SendError> {
        let core = &self.core;
        let metrics = core.send_metrics(topic, kind);
        let Some(in_flight) = self.lifecycle.enter() else {
            metrics.failed.inc();
            return Err(SendError::Closed);
        };
        let size = value.as_ref().map_or(0, Vec::len);
        let mut send = Outgoing {
            core: core.clone(),
            metrics,
            key: key.map(bytes::Bytes::from),
            value: value.map(bytes::Bytes::from),
            headers,
            size: size as u64,
            started: Instant::now(),
            timestamp_ms: crate::contract::clock::SystemClock.now_ms(),
            attempts: 0,
            backoff: None,
        };
        if size > MAX_RECORD_BYTES {
            send.count(in_flight, false);
            return Err(SendError::TooLarge { size });
        }
        if !self.throttle.is_unlimited() {
            // Boxed: most producers are unthrottled, and every send's future would otherwise
            // carry the throttle's wait.
            let waited = Box::pin(self.throttle.admit(size)).await;
            core.metrics
                .producer_throttled_seconds
                .get_or_create(&Metrics::topic(topic))
                .inc_by(waited.as_secs_f64());
            // The throttle's wait is not send latency.
            send.started = Instant::now();
        }
        if !core.breaker.allow() {
            send.count(in_flight, false);
            return Err(SendError::BreakerOpen);
        }
        match send.queue().await {
            Ok(queued) => Ok(PendingDelivery {
                state: Answer::Waiting {
                    queued,
                    send,
                    in_flight,
                },
            }),
            Err(e) => {
                let e = send.error(e);
                send.count(in_flight, false);
                Err(e)
            }
        }
    }
}

impl Core {
    fn backoff(&self) -> backon::ExponentialBackoff {
        let p = &self.config.producer;
        ExponentialBuilder::default()
            .with_min_delay(p.retry_backoff)
            .with_max_delay(p.retry_backoff_max)
            .with_factor(2.0)
            .with_max_times(p.max_retries)
            .with_jitter()
            .build()
    }
}

/// One record on its way: what it takes to queue it again, and what its attempts so far were.
struct Outgoing {
    core: Arc<Core>,
    /// The (topic, type)'s metric handles; also where the record goes (`metrics.topic`).
    metrics: Arc<SendMetrics>,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
    headers: BTreeMap<String, Vec<u8>>,
    size: u64,
    started: Instant,
    timestamp_ms: i64,
    attempts: usize,
    /// Built at the first retry: most sends never need it.
    backoff: Option<backon::ExponentialBackoff>,
}

impl Outgoing {
    /// Whether `e` is retried, and after how long: retriable errors within the allowed
    /// retries, except a delivery timeout, which means the client already retried the same
    /// idempotent batch for the whole of KAFKA_DELIVERY_TIMEOUT_MS: that send has failed
    /// (SPEC 8).
    fn retry_after(&mut self, e: &KafkaError) -> Option<std::time::Duration> {
        if !e.is_retriable() || matches!(e, KafkaError::DeliveryTimeout { .. }) {
            return None;
        }
        let core = &self.core;
        let after = self.backoff.get_or_insert_with(|| core.backoff()).next()?;
        tracing::warn!(topic = %self.metrics.topic, error = %e, retry_in = ?after, "send failed; retrying");
        Some(after)
    }

    /// Queues the record, retrying what fails before it is queued.
    async fn queue(&mut self) -> Result<crate::kafka::Queued, KafkaError> {
        loop {
            self.attempts += 1;
            let e = match self
                .core
                .sender
                .enqueue(
                    &self.metrics.topic,
                    self.key.clone(),
                    self.value.clone(),
                    &self.headers,
                    self.timestamp_ms,
                )
                .await
            {
                Ok(queued) => return Ok(queued),
                Err(e) => e,
            };
            match self.retry_after(&e) {
                Some(after) => Box::pin(tokio::time::sleep(after)).await,
                None => return Err(e),
            }
        }
    }

    /// After a delivery failed with `failure`: queues the record again while the failure is
    /// retriable (SPEC 8), and gives the last answer.
    async fn retry(
        mut self,
        mut failure: KafkaError,
        in_flight: lifecycle::InFlight,
    ) -> Result<Delivery, SendError> {
        let result = loop {
            match self.retry_after(&failure) {
                Some(after) => tokio::time::sleep(after).await,
                None => break Err(self.error(failure)),
            }
            let queued = match self.queue().await {
                Ok(q) => q,
                Err(e) => break Err(self.error(e)),
            };
            match queued.await {
                Ok((partition, offset)) => break Ok(self.delivery(partition, offset)),
                Err(e) => failure = e,
            }
        };
        self.count(in_flight, result.is_ok());
        result
    }

    /// Where the broker put the record.
    fn delivery(&self, partition: i32, offset: i64) -> Delivery {
        Delivery {
            topic: self.metrics.topic.clone(),
            partition,
            offset,
        }
    }

    /// The caller's error for a failed send, and the breaker's count of it.
    fn error(&self, e: KafkaError) -> SendError {
        match e {
            KafkaError::Closed(_) => SendError::Closed,
            // A full buffer says the broker is slow, not that it failed: the breaker is left
            // alone.
            KafkaError::BufferFull { bytes, waited, .. } => {
                SendError::Backpressure { bytes, waited }
            }
            source => {
                self.core.breaker.on_failure();
                SendError::Transport {
                    topic: self.metrics.topic.clone(),
                    attempts: self.attempts,
                    source,
                }
            }
        }
    }

    /// Counts a finished send: the handle's lifecycle, the breaker and the metrics.
    fn count(&self, in_flight: lifecycle::InFlight, acknowledged: bool) {
        in_flight.finish(acknowledged);
        let m = &self.metrics;
        match acknowledged {
            true => {
                self.core.breaker.on_success();
                m.bytes.inc_by(self.size);
                m.latency.observe(self.started.elapsed().as_secs_f64());
                m.sent.inc();
            }
            false => {
                m.failed.inc();
            }
        }
        self.core
            .metrics
            .circuit_breaker_state
            .set(self.core.breaker.state() as i64);
    }
}
