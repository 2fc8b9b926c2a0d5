//! The produce path: one krafka producer per [`Sender`], acks=all, idempotent unless turned
//! off (then the same pipeline runs with producer id -1), compression from the configuration,
//! a bounded buffer, and delivery bounded by the request timeout. The producer is built on
//! first use, so a failed producer-id initialisation is the error of that send (and retried on
//! the next), never a silent downgrade to non-idempotent sends.

use super::{Client, KafkaError};
use crate::config::{Compression, ProducerSettings};
use crate::contract::limits::MAX_RECORD_BYTES;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where an acknowledged record landed: (partition, offset).
pub(crate) type Landed = (i32, i64);

/// Bytes (keys, values and headers, and krafka's few dozen bytes of overhead per record) a
/// producer may hold unacknowledged before sends wait, and then fail with
/// [`KafkaError::BufferFull`] after the request timeout: 32 MiB, enough for 32 maximal
/// records. It is krafka's own buffer (`buffer_memory`), freed as the broker answers.
pub(crate) const BUFFER_BYTES: usize = 32 * 1024 * 1024;

use crate::config::PRODUCER_LINGER;

/// The most record bytes one partition's batch holds: 1,000,000, librdkafka's `batch.size`
/// and Sarama's `MaxMessageBytes` default, under the broker's default `message.max.bytes`.
/// krafka keeps one batch per partition on the wire, so this bounds what a partition moves
/// per round trip to its leader: at 256 KiB a busy partition sent a quarter of what Sarama
/// sends per request.
pub(crate) const BATCH_BYTES: usize = 1_000_000;

/// Keyed records go where Kafka's Java client puts them (murmur2 of the key), so a key's
/// records stay in order on one partition across clients; keyless records (every `ai.*`
/// record) are dealt round-robin, spreading the validators' load evenly even at low rates
/// (the built-in sticky choice would put a quiet producer's records on one partition).
#[derive(Debug, Default)]
struct KeyedOrRoundRobin {
    next: std::sync::atomic::AtomicUsize,
}

impl krafka::producer::Partitioner for KeyedOrRoundRobin {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partitions: usize) -> i32 {
        if partitions == 0 {
            return 0;
        }
        let n = match key {
            Some(k) => (krafka::producer::murmur2(k) & 0x7fff_ffff) as usize,
            None => self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        (n % partitions) as i32
    }
}

/// A queued record: resolves to where the broker put it, or why it was not acknowledged.
/// Dropping it does not cancel the send; only its answer is lost.
#[derive(Debug)]
#[must_use = "a dropped Queued discards the acknowledgement; the record is still sent"]
pub struct Queued {
    handle: krafka::producer::DeliveryHandle,
}

impl std::future::Future for Queued {
    type Output = Result<Landed, KafkaError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.handle)
            .poll(cx)
            .map(|r| r.map(|m| (m.partition, m.offset)).map_err(KafkaError::from))
    }
}

/// Sends records. Cheap to share behind an `Arc`.
pub struct Sender {
    client: Client,
    settings: ProducerSettings,
    producer: OnceCell<krafka::producer::Producer>,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("idempotent", &self.settings.idempotent)
            .finish_non_exhaustive()
    }
}

fn compression(c: Compression) -> Result<krafka::Compression, KafkaError> {
    Ok(match c {
        Compression::None => krafka::Compression::None,
        Compression::Gzip => krafka::Compression::Gzip,
        Compression::Snappy => krafka::Compression::Snappy,
        Compression::Lz4 => krafka::Compression::Lz4,
        #[cfg(feature = "c-codecs")]
        Compression::Zstd => krafka::Compression::Zstd,
        #[cfg(not(feature = "c-codecs"))]
        Compression::Zstd => {
            return Err(KafkaError::config(
                "KAFKA_PRODUCER_COMPRESSION",
                "zstd encoding needs the c-codecs feature",
            ))
        }
    })
}

impl Sender {
    /// A sender on `client` with `settings`.
    pub fn new(client: Client, settings: ProducerSettings) -> Sender {
        Sender {
            client,
            settings,
            producer: OnceCell::new(),
            closed: Default::default(),
        }
    }

    async fn producer(&self) -> Result<&krafka::producer::Producer, KafkaError> {
        match self.producer.get() {
            Some(p) => Ok(p),
            // Boxed: the start-up runs once, and every send's future would otherwise carry
            // its state.
            None => Box::pin(self.start_producer()).await,
        }
    }

    /// Builds the krafka producer, once.
    async fn start_producer(&self) -> Result<&krafka::producer::Producer, KafkaError> {
        self.producer
            .get_or_try_init(|| async {
                let timeout = self.client.timeout();
                let p = self
                    .client
                    .kafka()
                    .producer()
                    .acks(krafka::producer::Acks::All)
                    .partitioner(KeyedOrRoundRobin::default())
                    .idempotent(self.settings.idempotent)
                    .compression(compression(self.settings.compression)?)
                    .linger(PRODUCER_LINGER)
                    .batch_size(BATCH_BYTES)
                    // One maximal record plus batch and request overhead.
                    .max_request_size(MAX_RECORD_BYTES + 64 * 1024)
                    .buffer_memory(BUFFER_BYTES)
                    .max_block(timeout)
                    // Within it krafka retries the same idempotent batch (same producer id,
                    // epoch and sequence); `Config::validate` keeps it >= linger + request timeout.
                    .delivery_timeout(self.settings.delivery_timeout)
                    .retry_backoff(Duration::from_millis(100))
                    .metrics_push(false)
                    .build()
                    .await?;
                Ok::<_, KafkaError>(p)
            })
            .await
    }

    /// Queues one record and returns once it is queued (produce order is queue order); the
    /// returned [`Queued`] resolves to the broker's acknowledgement (acks=all). The record's
    /// bytes count against the 32 MiB of `BUFFER_BYTES` until the broker answers: a full
    /// buffer makes this wait, up to the request timeout, then fail with
    /// [`KafkaError::BufferFull`].
    pub async fn enqueue(
        &self,
        topic: &str,
        key: Option<bytes::Bytes>,
        value: Option<bytes::Bytes>,
        headers: &BTreeMap<String, Vec<u8>>,
        timestamp_ms: i64,
    ) -> Result<Queued, KafkaError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(KafkaError::Closed("producer closed".into()));
        }
        let producer = self.producer().await?;
        let bytes = key.as_ref().map_or(0, |k| k.len())
            + value.as_ref().map_or(0, |v| v.len())
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let mut r = krafka::Record::new(topic, bytes::Bytes::new()).timestamp(timestamp_ms);
        // A null value stays null on the wire.
        r.value = value;
        r.key = key;
        for (k, v) in headers {
            r = r.header(k.clone(), v.clone());
        }
        // Backpressure: krafka waits (up to max_block, the request timeout) for room in its
        // buffer, which is freed as the broker answers, whether or not anyone awaits them.
        match producer.enqueue(r).await {
            Ok(handle) => Ok(Queued { handle }),
            Err(krafka::KrafkaError::BufferExhausted { waited, .. }) => {
                Err(KafkaError::BufferFull {
                    bytes,
                    limit: BUFFER_BYTES,
                    waited,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The number of partitions of `topic` in the metadata this sender routes by, fetched
    /// (with the producer's set-up) if not known yet.
    pub async fn partitions(&self, topic: &str) -> Result<i32, KafkaError> {
        let n = self.producer().await?.partitions_for(topic).await?.len();
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// Waits until every record accepted so far is acknowledged or failed.
    pub async fn flush(&self) -> Result<(), KafkaError> {
        match self.producer.get() {
            Some(p) => Ok(p.flush().await?),
            None => Ok(()),
        }
    }

    /// Flushes, then closes the producer.
    pub async fn close(&self) -> Result<(), KafkaError> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        match self.producer.get() {
            Some(p) => Ok(p.close().await?),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krafka::producer::Partitioner as _;

    #[test]
    fn keys_follow_javas_murmur2_and_keyless_records_rotate() {
        let p = KeyedOrRoundRobin::default();
        // Java's DefaultPartitioner: toPositive(murmur2("policy-1")) % 3.
        let java = (krafka::producer::murmur2(b"policy-1") & 0x7fff_ffff) % 3;
        for _ in 0..5 {
            assert_eq!(p.partition("t", Some(b"policy-1"), 3), java as i32);
        }
        let spread: Vec<i32> = (0..6).map(|_| p.partition("t", None, 3)).collect();
        assert_eq!(spread, [0, 1, 2, 0, 1, 2]);
    }
}
