//! The group consumer: krafka's classic-protocol member with manual commits only. meshbus's
//! pipeline decides what is committed ([`GroupConsumer::commit`] with exactly the handled
//! offsets); krafka awaits [`RebalanceEvents::revoked`] before it gives partitions up, which
//! is where the pipeline stops them and commits what was handled.

use super::{Client, InRecord, KafkaError, MAX_DECOMPRESSED_BATCH_BYTES};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A (topic, partition) pair.
pub(crate) type TopicPartition = (String, i32);

/// A boxed future of a rebalance callback.
pub type EventFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the consumer pipeline does when the group changes its assignment. Each future is
/// awaited before the change takes effect.
pub trait RebalanceEvents: Send + Sync + 'static {
    /// Partitions newly assigned.
    fn assigned(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture;
    /// Partitions about to be taken away (still owned until the future completes): stop them
    /// and commit what was handled.
    fn revoked(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture;
    /// Partitions already taken away (session lost, fenced): stop them without committing.
    fn lost(self: Arc<Self>, partitions: Vec<TopicPartition>) -> EventFuture;
}

pub(crate) use crate::config::Assignor;

/// How to join a group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Group id.
    pub group: String,
    /// Topics subscribed.
    pub topics: Vec<String>,
    /// Assignors offered, preferred first.
    pub assignors: Vec<Assignor>,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Rebalance timeout (how long a revocation may take).
    pub rebalance_timeout: Duration,
    /// Start at the earliest record when the group has no committed offset (else the latest).
    pub start_earliest: bool,
    /// Largest fetch response.
    pub fetch_max_bytes: i32,
    /// Longest a fetch waits for records.
    pub fetch_max_wait: Duration,
    /// Static membership id (KIP-345), if any.
    pub instance_id: Option<String>,
    /// Group protocol.
    pub protocol: crate::config::GroupProtocol,
}

struct Listener(Arc<dyn RebalanceEvents>);

fn pairs(p: &[krafka::consumer::TopicPartition]) -> Vec<TopicPartition> {
    p.iter()
        .map(|t| (t.topic().to_string(), t.partition()))
        .collect()
}

impl krafka::consumer::ConsumerRebalanceListener for Listener {
    fn on_partitions_assigned<'a>(
        &'a self,
        partitions: &'a [krafka::consumer::TopicPartition],
    ) -> impl Future<Output = ()> + Send + 'a {
        self.0.clone().assigned(pairs(partitions))
    }

    fn on_partitions_revoked<'a>(
        &'a self,
        partitions: &'a [krafka::consumer::TopicPartition],
    ) -> impl Future<Output = ()> + Send + 'a {
        self.0.clone().revoked(pairs(partitions))
    }

    fn on_partitions_lost<'a>(
        &'a self,
        partitions: &'a [krafka::consumer::TopicPartition],
    ) -> impl Future<Output = ()> + Send + 'a {
        self.0.clone().lost(pairs(partitions))
    }
}

/// A member of a consumer group. Share it behind an `Arc`.
pub struct GroupConsumer {
    consumer: krafka::consumer::Consumer,
}

impl Client {
    /// Joins `spec.group` (on the first poll) with `events` called on every assignment change.
    pub async fn group_consumer(
        &self,
        spec: &GroupSpec,
        events: Arc<dyn RebalanceEvents>,
    ) -> Result<GroupConsumer, KafkaError> {
        use krafka::consumer::{AutoOffsetReset, PartitionAssignmentStrategy as S};
        let strategies: Vec<S> = spec
            .assignors
            .iter()
            .map(|a| match a {
                Assignor::Range => S::Range,
                Assignor::RoundRobin => S::RoundRobin,
                Assignor::CooperativeSticky => S::CooperativeSticky,
            })
            .collect();
        let mut builder = self.kafka().consumer(spec.group.clone());
        if let Some(id) = &spec.instance_id {
            builder = builder.group_instance_id(id.clone());
        }
        // Chosen explicitly either way (krafka warns only of a defaulted classic protocol):
        // classic is what a group shared with Sarama and older clients speaks; KIP-848 lets the
        // coordinator assign and set the session and heartbeat timing.
        builder = builder.group_protocol(match spec.protocol {
            crate::config::GroupProtocol::Classic => krafka::consumer::GroupProtocol::Classic,
            crate::config::GroupProtocol::Consumer => krafka::consumer::GroupProtocol::Consumer,
        });
        let consumer = builder
            .enable_auto_commit(false)
            .auto_offset_reset(if spec.start_earliest {
                AutoOffsetReset::Earliest
            } else {
                AutoOffsetReset::Latest
            })
            .session_timeout(spec.session_timeout)
            .heartbeat_interval(spec.heartbeat_interval)
            .max_poll_interval(spec.rebalance_timeout)
            .partition_assignment_strategies(strategies)
            .fetch_max_bytes(spec.fetch_max_bytes)
            .max_partition_fetch_bytes(spec.fetch_max_bytes)
            .fetch_max_wait(spec.fetch_max_wait)
            .max_buffered_records(buffered_records_for(spec.fetch_max_bytes))
            .max_decompressed_size(MAX_DECOMPRESSED_BATCH_BYTES)
            .metrics_push(false)
            .rebalance_listener(Listener(events))
            .build()
            .await?;
        consumer.subscribe(spec.topics.iter()).await?;
        Ok(GroupConsumer { consumer })
    }
}

/// The smallest record a whole fetch response is decoded for (see [`buffered_records_for`]).
const SMALLEST_WHOLLY_DECODED_RECORD: i32 = 256;

/// How many fetched records krafka may hold decoded between polls: every record of a full
/// response (`fetch_max_bytes`) of records of [`SMALLEST_WHOLLY_DECODED_RECORD`] bytes or more,
/// never below krafka's default (500) nor above 65,536.
///
/// krafka decodes a fetch round only up to one poll's worth plus the room left under this cap,
/// and drops the rest of the response to fetch it again. At its default a 4 MiB response of
/// 1 KiB records was fetched, sent over TLS and read four times over: the broker spent 2.8x
/// librdkafka's CPU per record on meshbus, and the Kafka layer read at half librdkafka's rate.
/// The buffer holds at most one response's records, so the memory it costs is bounded by
/// `fetch_max_bytes` plus a record header per record.
pub(super) fn buffered_records_for(fetch_max_bytes: i32) -> i32 {
    (fetch_max_bytes / SMALLEST_WHOLLY_DECODED_RECORD).clamp(500, 65_536)
}

impl GroupConsumer {
    /// Records fetched for the assigned, unpaused partitions (empty after `timeout`). Runs the
    /// rebalance callbacks when the assignment changes.
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<InRecord>, KafkaError> {
        let records = self.consumer.poll(timeout).await?;
        Ok(records.into_iter().map(InRecord::from).collect())
    }

    /// How many times this member's partitions were lost, updated the moment the heartbeat
    /// finds out (a fence, or no heartbeat answered within the session): lets the pipeline
    /// stop those partitions before the next poll returns.
    pub(crate) fn membership_lost(&self) -> tokio::sync::watch::Receiver<u64> {
        self.consumer
            .membership_lost_watch()
            .unwrap_or_else(|| tokio::sync::watch::channel(0).1)
    }

    /// Commits exactly `offsets` (the next offset to read, per partition).
    pub async fn commit(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let o: Vec<_> = offsets
            .iter()
            .map(|((t, p), o)| {
                (
                    krafka::consumer::TopicPartition::new(t.clone(), *p),
                    krafka::consumer::OffsetAndMetadata::new(*o),
                )
            })
            .collect();
        Ok(self.consumer.commit_offsets(o).await?)
    }

    /// Whether the member's last answered heartbeat is within the session's safe part (the
    /// classic protocol's local session deadline; always true where none is kept). False after
    /// the process was frozen or cut off past it: the coordinator may have handed this
    /// member's partitions to another, so nothing should be handled for them until a
    /// heartbeat is answered again or the loss is reported.
    pub(crate) fn session_alive(&self) -> bool {
        self.consumer
            .session_deadline()
            .is_none_or(|d| std::time::Instant::now() < d)
    }

    /// The group's committed offset of `partition` of `topic`, read from the coordinator;
    /// `None` when the group never committed one there.
    pub async fn committed(&self, topic: &str, partition: i32) -> Result<Option<i64>, KafkaError> {
        let found = self.consumer.committed(&[(topic, partition)]).await?;
        Ok(found
            .get(&(topic.to_string(), partition))
            .map(|c| c.offset)
            .filter(|o| *o >= 0))
    }

    /// Moves the fetch position of `partition` of `topic` to `offset`.
    pub async fn seek(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        Ok(self.consumer.seek(topic, partition, offset).await?)
    }

    /// Stops fetching `partition` of `topic` until resumed.
    pub async fn pause(&self, topic: &str, partition: i32) {
        self.consumer.pause(topic, &[partition]).await;
    }

    /// Fetches `partition` of `topic` again.
    pub async fn resume(&self, topic: &str, partition: i32) {
        self.consumer.resume(topic, &[partition]).await;
    }

    /// Records between each assigned partition's position and its end, where known.
    pub(crate) async fn lag(&self) -> Vec<(TopicPartition, i64)> {
        self.consumer
            .lag()
            .await
            .into_iter()
            .filter_map(|(tp, l)| Some(((tp.topic().to_string(), tp.partition()), l.lag? as i64)))
            .collect()
    }

    /// Leaves the group (running the revocation callback first) and closes.
    pub async fn close(&self) -> Result<(), KafkaError> {
        Ok(self.consumer.close().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::buffered_records_for;

    #[test]
    fn a_whole_fetch_response_of_ordinary_records_stays_decoded() {
        // meshbus's default fetch size (4 MiB) of 1 KiB records is 4,096 records: all of them.
        assert_eq!(buffered_records_for(4 * 1024 * 1024), 16_384);
        assert!(buffered_records_for(4 * 1024 * 1024) >= 4 * 1024 * 1024 / 1024);
        // Small fetch sizes keep krafka's default; huge ones stop at the ceiling.
        assert_eq!(buffered_records_for(64 * 1024), 500);
        assert_eq!(buffered_records_for(i32::MAX), 65_536);
    }
}
