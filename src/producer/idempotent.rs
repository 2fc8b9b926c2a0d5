//! Idempotent sends (SPEC 5, on by default): a producer id and epoch from InitProducerId, and per
//! partition one sender task that batches what is waiting, numbers it with the partition's
//! sequence and retries the same batch (same sequence) until the leader acknowledges it. The
//! broker drops a batch it already holds, so a retry after a lost answer cannot duplicate.
//!
//! When a batch finally fails, whether the broker holds it is unknown; the producer id is then
//! renewed, so later batches start a fresh sequence instead of being refused as out of order.

use crate::config::{Compression as Codec, Config};
use crate::protocol::produce::{self, BatchTarget, OutRecord};
use crate::protocol::{self, Cluster, Connection};
use crate::transport::TransportError;
use backon::{ExponentialBuilder, Retryable};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::records::Compression;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most records in one batch.
const MAX_BATCH_RECORDS: usize = 500;
/// Most value bytes in one batch (the broker's default message limit is 1 MiB).
const MAX_BATCH_BYTES: usize = 900 * 1024;

struct Pending {
    record: OutRecord,
    reply: oneshot::Sender<Result<i64, TransportError>>,
}

#[derive(Clone, Copy, Default)]
struct Session {
    producer_id: i64,
    epoch: i16,
    /// Bumped whenever the producer id is renewed; sequences restart at 0.
    generation: u64,
    ready: bool,
}

/// The idempotent send path shared by all tasks of one producer.
pub(crate) struct IdempotentSender {
    cluster: Cluster,
    config: Config,
    session: tokio::sync::Mutex<Session>,
    leaders: tokio::sync::Mutex<HashMap<String, Vec<String>>>,
    connections: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
    queues: Mutex<HashMap<(String, i32), mpsc::Sender<Pending>>>,
}

impl IdempotentSender {
    pub(crate) fn new(config: &Config) -> Result<Arc<Self>, TransportError> {
        Ok(Arc::new(IdempotentSender {
            cluster: Cluster::new(config)?,
            config: config.clone(),
            session: Default::default(),
            leaders: Default::default(),
            connections: Default::default(),
            queues: Mutex::new(HashMap::new()),
        }))
    }

    /// Appends `record` to `topic`/`partition`; returns its offset once acknowledged.
    pub(crate) async fn send(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        record: OutRecord,
    ) -> Result<i64, TransportError> {
        let tx = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .entry((topic.to_string(), partition))
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(4096);
                    tokio::spawn(
                        self.clone()
                            .partition_task(topic.to_string(), partition, rx),
                    );
                    tx
                })
                .clone()
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Pending { record, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn partition_task(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        mut rx: mpsc::Receiver<Pending>,
    ) {
        let mut sequence = 0i32;
        let mut generation = u64::MAX;
        while let Some(first) = rx.recv().await {
            let mut bytes = first.record.value.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.record.value.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let (records, replies): (Vec<OutRecord>, Vec<_>) =
                batch.into_iter().map(|p| (p.record, p.reply)).unzip();
            let result = self
                .produce_batch(&topic, partition, &records, &mut sequence, &mut generation)
                .await;
            for (i, reply) in replies.into_iter().enumerate() {
                let r = match &result {
                    Ok(base) if *base >= 0 => Ok(base + i as i64),
                    Ok(base) => Ok(*base),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(r);
            }
        }
    }

    async fn session(&self) -> Result<Session, TransportError> {
        let mut s = self.session.lock().await;
        if !s.ready {
            let conn = self.cluster.bootstrap().await?;
            let (producer_id, epoch) = produce::init_producer_id(&conn).await?;
            tracing::debug!(producer_id, epoch, "idempotent producer id");
            *s = Session {
                producer_id,
                epoch,
                generation: s.generation + 1,
                ready: true,
            };
        }
        Ok(*s)
    }

    /// Forgets the producer id of `generation` so the next batch asks for a new one.
    async fn renew(&self, generation: u64) {
        let mut s = self.session.lock().await;
        if s.generation == generation {
            s.ready = false;
        }
    }

    /// SPEC 5 retry policy: exponential backoff with jitter.
    fn backoff(&self) -> ExponentialBuilder {
        let p = &self.config.producer;
        ExponentialBuilder::default()
            .with_min_delay(p.retry_backoff)
            .with_max_delay(p.retry_backoff_max)
            .with_factor(2.0)
            .with_max_times(p.max_retries)
            .with_jitter()
    }

    /// Number of partitions of `topic` (from the leader map), retrying retriable errors.
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<i32, TransportError> {
        (|| self.leader_addr(topic, 0))
            .retry(self.backoff())
            .when(|e: &TransportError| e.is_retriable())
            .await?;
        let leaders = self.leaders.lock().await;
        Ok(leaders.get(topic).map_or(0, |l| l.len() as i32))
    }

    async fn leader_addr(&self, topic: &str, partition: i32) -> Result<String, TransportError> {
        let mut leaders = self.leaders.lock().await;
        if !leaders.contains_key(topic) {
            let conn = self.cluster.bootstrap().await?;
            leaders.insert(topic.to_string(), produce::leaders(&conn, topic).await?);
        }
        leaders[topic]
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| TransportError::Broker {
                detail: format!("{topic} has no partition {partition}"),
                retriable: false,
            })
    }

    async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Connection>, TransportError> {
        let addr = self.leader_addr(topic, partition).await?;
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(&addr) {
            return Ok(c.clone());
        }
        let c = self.cluster.connect(&addr).await?;
        conns.insert(addr, c.clone());
        Ok(c)
    }

    async fn forget_routes(&self, topic: &str) {
        self.leaders.lock().await.remove(topic);
        self.connections.lock().await.clear();
    }

    fn compression(&self) -> Compression {
        match self.config.producer.compression {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }

    /// Sends one batch with retries; returns the base offset (-1 when the broker reports the
    /// batch as a duplicate of one it already holds, without its offset).
    async fn produce_batch(
        &self,
        topic: &str,
        partition: i32,
        records: &[OutRecord],
        sequence: &mut i32,
        generation: &mut u64,
    ) -> Result<i64, TransportError> {
        let session = (|| self.session())
            .retry(self.backoff())
            .when(|e: &TransportError| e.is_retriable())
            .await?;
        if session.generation != *generation {
            *generation = session.generation;
            *sequence = 0;
        }
        let target = BatchTarget {
            topic,
            partition,
            producer_id: session.producer_id,
            producer_epoch: session.epoch,
            base_sequence: *sequence,
        };
        let batch = produce::encode_batch(&target, records, self.compression())?;
        let timeout_ms = self.config.request_timeout.as_millis() as i32;
        let attempt = || async {
            let conn = self.leader(topic, partition).await?;
            match produce::produce(&conn, topic, partition, batch.clone(), timeout_ms).await {
                Ok(Ok(base)) => Ok(base),
                Ok(Err(code))
                    if protocol::response_error(code) == Some(E::DuplicateSequenceNumber) =>
                {
                    Ok(-1)
                }
                Ok(Err(code)) => {
                    let e = protocol::api_error(&format!("produce to {topic}/{partition}"), code);
                    if e.is_retriable() {
                        self.forget_routes(topic).await;
                    }
                    Err(e)
                }
                Err(e) => {
                    self.forget_routes(topic).await;
                    Err(e)
                }
            }
        };
        let result = attempt
            .retry(self.backoff())
            .when(|e: &TransportError| e.is_retriable())
            .notify(|e, after| tracing::warn!(topic, partition, error = %e, retry_in = ?after, "idempotent batch failed; resending with the same sequence"))
            .await;
        match result {
            Ok(base) => {
                *sequence = sequence.wrapping_add(records.len() as i32) & i32::MAX;
                Ok(base)
            }
            Err(e) => {
                self.renew(session.generation).await;
                Err(e)
            }
        }
    }
}

fn closed() -> TransportError {
    TransportError::Broker {
        detail: "idempotent sender stopped".into(),
        retriable: true,
    }
}
