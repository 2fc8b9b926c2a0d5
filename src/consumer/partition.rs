//! One assigned partition: fetch (rskafka), verify, hand to the handler with retries, dead-letter
//! what fails, and record the next offset as handled, strictly in offset order.

use super::{Consumed, Shared};
use crate::contract::{Clock as _, Kind, SystemClock};
use crate::dlq::DeadLetter;
use crate::metrics::Metrics;
use crate::protocol::offsets::TopicPartition;
use crate::transport::{bounded, TransportError};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Next offset to read per partition, advanced only after a record was handled or dead-lettered.
pub(crate) type Progress = Arc<Mutex<BTreeMap<TopicPartition, i64>>>;

/// Doubling delay with a cap.
pub(crate) struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Sleeps for `d` unless `stop` is raised first; returns false when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

enum Outcome {
    /// Handled or dead-lettered: the offset may be committed.
    Done,
    /// Stopped before that: leave the offset for the next owner.
    Stopped,
}

pub(crate) struct PartitionWorker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tp: TopicPartition,
    pub(crate) kind: Kind,
    pub(crate) start: Option<i64>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) progress: Progress,
}

impl PartitionWorker {
    async fn client(&mut self) -> Option<PartitionClient> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let t = &self.shared.transport;
            let r = bounded(
                t.timeout(),
                "partition_client",
                t.client().partition_client(
                    self.tp.0.clone(),
                    self.tp.1,
                    UnknownTopicHandling::Retry,
                ),
            )
            .await;
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(topic = %self.tp.0, partition = self.tp.1, error = %e, "no partition client yet");
                    if !pause(backoff.next_delay(), &mut self.stop).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn start_offset(&mut self, client: &PartitionClient) -> Result<i64, TransportError> {
        let at = match self.shared.options.start_from {
            super::StartFrom::Earliest => OffsetAt::Earliest,
            super::StartFrom::Latest => OffsetAt::Latest,
        };
        bounded(
            self.shared.transport.timeout(),
            "list_offsets",
            client.get_offset(at),
        )
        .await
    }

    /// Runs until stopped.
    pub(crate) async fn run(mut self) {
        let Some(mut client) = self.client().await else {
            return;
        };
        let mut errors = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut offset = self.start;
        let (topic, partition) = self.tp.clone();
        let lag = self
            .shared
            .metrics
            .consumer_lag
            .get_or_create(&crate::metrics::TopicPartition {
                topic: topic.clone(),
                partition: partition.to_string(),
            })
            .clone();
        while !*self.stop.borrow() {
            let next = match offset {
                Some(o) => o,
                None => match self.start_offset(&client).await {
                    Ok(o) => {
                        offset = Some(o);
                        o
                    }
                    Err(e) => {
                        tracing::warn!(%topic, partition, error = %e, "cannot find the start offset");
                        if !pause(errors.next_delay(), &mut self.stop).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let o = &self.shared.options;
            let fetch = client.fetch_records(next, 1..o.fetch_max_bytes, o.fetch_max_wait_ms);
            let fetched = tokio::select! {
                r = tokio::time::timeout(self.shared.transport.timeout(), fetch) => r,
                _ = self.stop.changed() => return,
            };
            let (records, high_watermark) = match fetched {
                Ok(Ok(r)) => r,
                Ok(Err(KafkaError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                })) => {
                    tracing::warn!(%topic, partition, offset = next, "offset out of range; restarting from the start policy");
                    offset = None;
                    continue;
                }
                other => {
                    let e = match other {
                        Ok(Err(e)) => TransportError::from(e),
                        _ => TransportError::Timeout {
                            op: "fetch",
                            after: self.shared.transport.timeout(),
                        },
                    };
                    tracing::warn!(%topic, partition, error = %e, "fetch failed; retrying");
                    if !pause(errors.next_delay(), &mut self.stop).await {
                        return;
                    }
                    match self.client().await {
                        Some(c) => client = c,
                        None => return,
                    }
                    continue;
                }
            };
            errors.reset();
            let mut next = next;
            for r in records {
                if r.offset < next {
                    continue;
                }
                if *self.stop.borrow() {
                    return;
                }
                match self.process(&r).await {
                    Outcome::Done => {
                        next = r.offset + 1;
                        offset = Some(next);
                        self.progress
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(self.tp.clone(), next);
                    }
                    Outcome::Stopped => return,
                }
            }
            lag.set((high_watermark - next).max(0));
        }
    }

    async fn process(&mut self, r: &RecordAndOffset) -> Outcome {
        let shared = self.shared.clone();
        let topic = self.tp.0.as_str();
        let label = Metrics::topic(topic);
        shared.metrics.messages_received.get_or_create(&label).inc();
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let value = r.record.value.as_deref().unwrap_or_default();
        let verified = shared
            .verifier
            .verify_record(self.kind, value, &r.record.headers);
        let message = match verified {
            Ok(m) => m,
            Err(e) => {
                let code = e.reason.code();
                shared
                    .metrics
                    .messages_rejected
                    .get_or_create(&Metrics::topic_reason(topic, code))
                    .inc();
                shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    topic,
                    partition = self.tp.1,
                    offset = r.offset,
                    reason = code,
                    "record rejected"
                );
                return self.dead_letter(r, code, &e.detail).await;
            }
        };
        let consumed = Consumed {
            topic: topic.to_string(),
            partition: self.tp.1,
            offset: r.offset,
            key: r.record.key.clone(),
            headers: r.record.headers.clone(),
            message,
        };
        let handler = shared.handlers[&self.kind].clone();
        let settings = &shared.config.consumer;
        let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff_max);
        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            let fut = handler.handle(consumed.clone());
            let result = match tokio::spawn(fut).await {
                Ok(r) => r,
                Err(e) => Err(format!("handler panicked: {e}")),
            };
            match result {
                Ok(()) => {
                    shared
                        .metrics
                        .messages_processed
                        .get_or_create(&label)
                        .inc();
                    shared
                        .metrics
                        .processing_latency
                        .get_or_create(&label)
                        .observe(started.elapsed().as_secs_f64());
                    shared.stats.handled.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Done;
                }
                Err(e) if attempt > settings.retry_max => break e,
                Err(e) => {
                    tracing::warn!(topic, partition = self.tp.1, offset = r.offset, attempt, error = %e, "handler failed; retrying");
                    if !pause(backoff.next_delay(), &mut self.stop).await {
                        return Outcome::Stopped;
                    }
                }
            }
        };
        shared.stats.handler_failed.fetch_add(1, Ordering::Relaxed);
        self.dead_letter(r, "handler_failed", &last_error).await
    }

    /// Writes the record to the DLQ, retrying until the broker acknowledges it (SPEC 6: the
    /// partition waits rather than lose the record).
    async fn dead_letter(&mut self, r: &RecordAndOffset, reason: &str, error: &str) -> Outcome {
        let shared = self.shared.clone();
        let letter = DeadLetter {
            original_topic: self.tp.0.clone(),
            original_partition: self.tp.1,
            original_offset: r.offset,
            reason: reason.to_string(),
            error: error.to_string(),
            node_id: shared.config.node_id.to_string(),
            failed_at_ms: SystemClock.now_ms(),
            key: r.record.key.clone(),
            value: r.record.value.clone().unwrap_or_default(),
            original_headers: r.record.headers.clone(),
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match letter
                .write(&shared.producer, &shared.config.dlq_topic)
                .await
            {
                Ok(_) => {
                    shared
                        .metrics
                        .dlq_messages
                        .get_or_create(&Metrics::topic_reason(&self.tp.0, reason))
                        .inc();
                    shared.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Done;
                }
                Err(e) => {
                    tracing::error!(topic = %self.tp.0, partition = self.tp.1, offset = r.offset, error = %e, "DLQ write failed; the partition waits and retries");
                    if !pause(backoff.next_delay(), &mut self.stop).await {
                        return Outcome::Stopped;
                    }
                }
            }
        }
    }
}
