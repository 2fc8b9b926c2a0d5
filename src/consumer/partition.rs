//! One assigned partition: records arrive from the group consumer in offset order; each is
//! verified, handed to the handler with retries, dead-lettered if it fails, and only then
//! marked handled in the offset tracker. Stopping takes effect between records (or during a
//! retry pause), never in the middle of one.

use super::backoff::Backoff;
use super::handler::{call, describe, Nack};
use super::offsets::{OffsetTracker, TopicPartition};
use super::stream::Unanswered;
use super::warmup::{self, Warming};
use super::{Consumed, Shared};
use crate::contract::{Admitted, Clock as _, Kind, Place, SystemClock};
use crate::dlq::DeadLetter;
use crate::kafka::{GroupConsumer, InRecord};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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

/// The partition's per-topic metric handles, looked up once per worker instead of once per
/// record (each lookup builds a label and takes the family's lock).
pub(crate) struct PartitionCounters {
    received: prometheus_client::metrics::counter::Counter,
    processed: prometheus_client::metrics::counter::Counter,
    redelivered: prometheus_client::metrics::counter::Counter,
    latency: prometheus_client::metrics::histogram::Histogram,
}

impl PartitionCounters {
    pub(crate) fn new(metrics: &Metrics, topic: &str) -> PartitionCounters {
        let label = Metrics::topic(topic);
        PartitionCounters {
            received: metrics.messages_received.get_or_create(&label).clone(),
            processed: metrics.messages_processed.get_or_create(&label).clone(),
            redelivered: metrics.messages_redelivered.get_or_create(&label).clone(),
            latency: metrics.processing_latency.get_or_create(&label).clone(),
        }
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
    pub(crate) records: mpsc::UnboundedReceiver<InRecord>,
    /// Records sent to this worker and not yet finished (the poll loop pauses the partition
    /// while it is high).
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) tracker: Arc<OffsetTracker>,
    /// The offset after the last record this process finished on the partition (kept across
    /// assignments): a record below it is a redelivery.
    pub(crate) finished: Arc<AtomicI64>,
    /// For an `ai.*` partition: the group consumer to read the committed offset from, and the
    /// readiness mark held until the replay guard has read the partition back.
    pub(crate) warmup: Option<(Arc<GroupConsumer>, Warming)>,
    /// The member, whose session is checked before each record.
    pub(crate) member: Option<Arc<GroupConsumer>>,
    /// Workers of this partition stopped by a membership loss, possibly still finishing their
    /// record in hand: awaited first, so one process never handles a partition twice at once.
    pub(crate) previous: Vec<tokio::task::JoinHandle<()>>,
    /// Whether a redelivery was logged yet (once per worker, at warn level).
    pub(crate) redelivery_logged: bool,
    /// This partition's metric handles.
    pub(crate) counters: PartitionCounters,
}

impl PartitionWorker {
    /// Runs until stopped or until the record channel closes; an `ai.*` partition is read
    /// back into the replay guard first.
    pub(crate) async fn run(mut self) {
        for previous in std::mem::take(&mut self.previous) {
            tokio::select! {
                _ = previous => {}
                _ = self.stop.changed() => return,
            }
        }
        if let Some((consumer, warming)) = self.warmup.take() {
            let finished = self.finished.load(Ordering::Relaxed);
            let read = warmup::read_back(
                &self.shared,
                &consumer,
                &self.tp,
                self.kind,
                finished,
                &mut self.stop,
            )
            .await;
            drop(warming);
            if read.is_none() {
                return; // stopped while reading back
            }
        }
        loop {
            let r = tokio::select! {
                r = self.records.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
                _ = self.stop.changed() => return,
            };
            if *self.stop.borrow() || !self.session_held().await {
                return;
            }
            match self.process(&r).await {
                Outcome::Done => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    self.finished.fetch_max(r.offset + 1, Ordering::Relaxed);
                    self.tracker.handled(&self.tp, r.offset + 1);
                }
                Outcome::Stopped => return,
            }
        }
    }

    /// Waits while the member's last answered heartbeat is past the session deadline (the
    /// process was frozen, or cut off from its coordinator): the partition may already be
    /// another member's, so nothing is handled until a heartbeat is answered again, or the
    /// loss is reported and the partition stopped (false).
    async fn session_held(&mut self) -> bool {
        let Some(member) = self.member.clone() else {
            return true;
        };
        let mut warned = false;
        while !member.session_alive() {
            if !warned {
                warned = true;
                tracing::warn!(topic = %self.tp.0, partition = self.tp.1, "no heartbeat answered within the session: holding the partition's records until the membership is confirmed or lost");
            }
            if !pause(Duration::from_millis(50), &mut self.stop).await {
                return false;
            }
        }
        true
    }

    async fn process(&mut self, r: &InRecord) -> Outcome {
        let shared = self.shared.clone();
        let topic = self.tp.0.as_str();
        self.counters.received.inc();
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let finished = self.finished.load(Ordering::Relaxed);
        if r.offset < finished {
            if !self.redelivery_logged {
                self.redelivery_logged = true;
                tracing::warn!(topic, partition = self.tp.1, offset = r.offset, finished, "records below the offset this process already finished here are skipped as redeliveries (kafka_messages_redelivered_total counts them)");
            }
            return self.redelivered(r);
        }
        if let Some(why) = &r.undecodable {
            shared
                .metrics
                .messages_rejected
                .get_or_create(&Metrics::topic_reason(topic, "malformed"))
                .inc();
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            let why = why.clone();
            return self.dead_letter(r, "malformed", &why).await;
        }
        // Shared, not copied: the verified message's byte fields are slices of the fetch.
        let value = r.value.clone().unwrap_or_default();
        let place = Place::new(topic, self.tp.1, r.offset);
        let verified = shared
            .verifier
            .verify_reserving(self.kind, value, &r.headers, Some(place));
        // The replay entry is remembered only once the record was handled or dead-lettered:
        // if the partition stops first, the next owner's redelivery is handled, not refused.
        let (message, reservation) = match verified {
            Ok(Admitted::Fresh(m, reservation)) => (m, reservation),
            Ok(Admitted::Redelivered(_)) => return self.redelivered(r),
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
        let consumed = Consumed::new(
            topic,
            self.tp.1,
            r.offset,
            r.key.clone(),
            r.headers.clone(),
            message,
        );
        let outcome = self.handle(r, consumed, started).await;
        if let (Outcome::Done, Some(reservation)) = (&outcome, reservation) {
            reservation.confirm();
        }
        outcome
    }

    /// A record handed out again at a place already handled or dead-lettered (a lost commit,
    /// a rebalance): not handled again, not dead-lettered, committed (SPEC 3e).
    fn redelivered(&self, r: &InRecord) -> Outcome {
        let topic = self.tp.0.as_str();
        self.counters.redelivered.inc();
        self.shared
            .stats
            .redelivered
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            topic,
            partition = self.tp.1,
            offset = r.offset,
            "record redelivered; already handled or dead-lettered here, skipped"
        );
        Outcome::Done
    }

    /// The partition stops with a dead letter unacknowledged: counted as stalled (a graceful
    /// stop reports it), the record left uncommitted for the next owner.
    fn stalled(&self, r: &InRecord) -> Outcome {
        self.shared
            .stats
            .stalled_partitions
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(topic = %self.tp.0, partition = self.tp.1, offset = r.offset, "partition stopped with its dead letter unwritten; the record stays uncommitted");
        Outcome::Stopped
    }

    /// Runs the handler with retries; dead-letters the record when they run out.
    async fn handle(&mut self, r: &InRecord, consumed: Consumed, started: Instant) -> Outcome {
        let shared = self.shared.clone();
        let topic = self.tp.0.as_str();
        let handler = shared.handlers[&self.kind].clone();
        let settings = &shared.config.consumer;
        let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff_max);
        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            // A panic in the handler (with panic = "unwind"), its synchronous part included,
            // is a handler failure, not a dead worker.
            match call(&*handler, consumed.clone()).await {
                Ok(()) => {
                    self.counters.processed.inc();
                    self.counters
                        .latency
                        .observe(started.elapsed().as_secs_f64());
                    shared.stats.handled.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Done;
                }
                Err(e) if e.is::<Unanswered>() => {
                    // A stream's reader dropped the record unanswered: offered again, not
                    // counted as a failure, never dead-lettered for it.
                    attempt -= 1;
                    tracing::debug!(
                        topic,
                        partition = self.tp.1,
                        offset = r.offset,
                        "stream item dropped unanswered; offered again"
                    );
                    if !pause(backoff.next_delay(), &mut self.stop).await {
                        return Outcome::Stopped;
                    }
                }
                Err(e) if e.is::<Nack>() || attempt > settings.retry_max => break describe(&*e),
                Err(e) => {
                    let e = describe(&*e);
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
    async fn dead_letter(&mut self, r: &InRecord, reason: &str, error: &str) -> Outcome {
        let shared = self.shared.clone();
        let mut letter = DeadLetter {
            original_topic: self.tp.0.clone(),
            original_partition: self.tp.1,
            original_offset: r.offset,
            reason: reason.to_string(),
            error: error.to_string(),
            node_id: shared.config.node_id.to_string(),
            failed_at_ms: SystemClock.now_ms(),
            key: r.key.clone(),
            value: r.value.as_ref().map(|v| v.to_vec()),
            omitted: None,
            original_headers: r.headers.clone(),
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            // A write waits for its topic's metadata and then for up to the delivery timeout;
            // a stop cannot wait that long, so it ends the wait: the partition stopped with its
            // dead letter unacknowledged, the record uncommitted (a write that still lands
            // later is at worst a second dead letter of it, never a loss).
            let written = tokio::select! {
                w = letter.write(&shared.producer, &shared.config.dlq_topic) => Some(w),
                _ = self.stop.changed() => None,
            };
            let Some(written) = written else {
                return self.stalled(r);
            };
            match written {
                Ok(_) => {
                    tracing::info!(
                        topic = %self.tp.0,
                        partition = self.tp.1,
                        offset = r.offset,
                        reason,
                        value_omitted = letter.omitted.is_some(),
                        "record dead-lettered"
                    );
                    if letter.omitted.is_some() {
                        tracing::warn!(topic = %self.tp.0, partition = self.tp.1, offset = r.offset, "dead letter written without its value (too large for the DLQ)");
                    }
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
                        return self.stalled(r);
                    }
                }
            }
        }
    }
}
