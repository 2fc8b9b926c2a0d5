//! The **fetch** stage: the poll loop's steps. One poll's records go to their partitions'
//! workers; an undecodable batch's place goes to its worker as a dead letter and the fetch
//! moves past it; retriable trouble is retried with backoff; between polls the offset tracker
//! commits, drained partitions resume and the lag metric is refreshed. Membership loss is
//! watched apart from the loop, so partitions stop even while a poll is held up.

use super::assignment::Assignment;
use super::backoff::Backoff;
use super::offsets::OffsetTracker;
use super::{ConsumeError, Shared};
use crate::kafka::{GroupConsumer, InRecord, KafkaError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stops partitions the moment the membership is lost (a fence, or no heartbeat answered
/// within the session), in a task of its own.
pub(super) fn watch_membership(
    consumer: &GroupConsumer,
    assignment: &Arc<Assignment>,
) -> tokio::task::JoinHandle<()> {
    let mut lost = consumer.membership_lost();
    let assignment = assignment.clone();
    tokio::spawn(async move {
        while lost.changed().await.is_ok() {
            let count = *lost.borrow_and_update();
            assignment.lose_before(count);
        }
    })
}

/// The poll loop's state.
pub(super) struct PollLoop {
    group: String,
    shared: Arc<Shared>,
    consumer: Arc<GroupConsumer>,
    assignment: Arc<Assignment>,
    tracker: Arc<OffsetTracker>,
    commit_interval: Duration,
    poll_timeout: Duration,
    last_commit: Instant,
    errors: Backoff,
}

impl PollLoop {
    pub(super) fn new(
        group: String,
        shared: Arc<Shared>,
        consumer: Arc<GroupConsumer>,
        assignment: Arc<Assignment>,
        tracker: Arc<OffsetTracker>,
        commit_interval: Duration,
    ) -> PollLoop {
        PollLoop {
            group,
            shared,
            consumer,
            assignment,
            tracker,
            commit_interval,
            // Commits happen between polls, which return at least this often.
            poll_timeout: commit_interval
                .clamp(Duration::from_millis(10), Duration::from_millis(500)),
            last_commit: Instant::now(),
            errors: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        }
    }

    /// One poll.
    pub(super) async fn poll(&self) -> Result<Vec<InRecord>, KafkaError> {
        self.consumer.poll(self.poll_timeout).await
    }

    async fn dispatch(&self, records: Vec<InRecord>) {
        for (t, p) in self.assignment.dispatch(records) {
            self.consumer.pause(&t, p).await;
        }
    }

    /// Hands a poll's outcome on; only an error retrying cannot fix ends the consumer.
    pub(super) async fn handle(
        &mut self,
        polled: Result<Vec<InRecord>, KafkaError>,
    ) -> Result<(), ConsumeError> {
        match polled {
            Ok(records) => {
                self.errors.reset();
                self.shared.health.polling.store(true, Ordering::Relaxed);
                self.dispatch(records).await;
            }
            Err(KafkaError::UndecodableBatch {
                topic,
                partition,
                offset,
                detail,
            }) => {
                self.skip_undecodable(topic, partition, offset, detail)
                    .await
            }
            Err(e) if e.is_retriable() => {
                self.shared.health.polling.store(false, Ordering::Relaxed);
                tracing::warn!(group = %self.group, error = %e, "poll failed; retrying");
                tokio::time::sleep(self.errors.next_delay()).await;
            }
            Err(e) => {
                self.assignment.stop_all_and_commit().await;
                let _ = self.consumer.close().await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Corrupt data would stall the partition forever: its place is dead-lettered in order
    /// like a record (reason `malformed`), and the fetch moves past it.
    async fn skip_undecodable(
        &mut self,
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    ) {
        tracing::error!(%topic, partition, offset, %detail, "undecodable record batch; dead-lettering its place and moving past it");
        let why = format!("undecodable record batch: {detail}");
        self.dispatch(vec![InRecord::undecodable(&topic, partition, offset, why)])
            .await;
        if let Err(e) = self.consumer.seek(&topic, partition, offset + 1).await {
            tracing::warn!(%topic, partition, error = %e, "seeking past an undecodable batch failed; retrying");
            tokio::time::sleep(self.errors.next_delay()).await;
        }
    }

    /// Between polls: fail loudly on a dead worker; on the interval, commit what was handled,
    /// resume drained partitions and refresh the lag metric.
    pub(super) async fn maintain(&mut self) -> Result<(), ConsumeError> {
        if let Some((topic, partition)) = self.assignment.crashed() {
            tracing::error!(%topic, partition, "a partition worker panicked; stopping the consumer");
            self.assignment.stop_all_and_commit().await;
            let _ = self.consumer.close().await;
            return Err(ConsumeError::WorkerPanicked { topic, partition });
        }
        if self.last_commit.elapsed() < self.commit_interval {
            return Ok(());
        }
        self.last_commit = Instant::now();
        self.tracker
            .commit(&self.consumer, None, &self.shared.stats)
            .await;
        for (t, p) in self.assignment.drained() {
            self.consumer.resume(&t, p).await;
        }
        for ((topic, partition), lag) in self.consumer.lag().await {
            let labels = crate::metrics::TopicPartition {
                topic,
                partition: partition.to_string(),
            };
            self.shared
                .metrics
                .consumer_lag
                .get_or_create(&labels)
                .set(lag);
        }
        Ok(())
    }

    /// Leaves the group: the revocation callback stops the workers after the record in hand
    /// and commits the handled offsets before the group hears we left.
    pub(super) async fn leave(self) {
        self.shared.health.holding.store(false, Ordering::Relaxed);
        self.shared.health.polling.store(false, Ordering::Relaxed);
        if let Err(e) = self.consumer.close().await {
            tracing::warn!(group = %self.group, error = %e, "leaving the group failed");
            self.assignment.stop_all_and_commit().await;
        }
    }
}
