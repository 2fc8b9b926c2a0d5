//! The verifying group consumer. Its stages, each in its own file:
//! - **fetch** (`poll.rs`): the poll loop hands each record to its partition's worker
//!   (`assignment.rs` holds one worker per partition, pausing long queues);
//! - **verify**, **handle**, **dead-letter** (`partition.rs`): the verifier, the handler with
//!   retries, and the DLQ write awaited until acknowledged;
//! - **mark** (`offsets.rs`): the one offset tracker owns "handled up to" and "committed up
//!   to" per partition and is the only thing that commits: on the interval, on revocation
//!   (`assignment.rs`) and on shutdown.

mod assignment;
mod backoff;
mod handler;
mod offsets;
mod partition;
mod poll;
mod stream;
mod warmup;

pub use handler::{Consumed, Handler, HandlerError, HandlerFuture, HandlerResult, Nack, Verified};
pub use offsets::{OffsetTracker, Progress, TopicPartition};
pub use stream::{Received, VerifiedStream};

use crate::config::Config;
use crate::contract::{Kind, KindOf, Verifier};
use crate::kafka::{Client, GroupSpec, KafkaError};
use crate::metrics::Metrics;
use crate::producer::Producer;
use assignment::Assignment;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts since the consumer was made, kept current by the running consumer; read them with
/// [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Records fetched.
    pub(crate) received: AtomicU64,
    /// Records a handler accepted.
    pub(crate) handled: AtomicU64,
    /// Records refused by verification.
    pub(crate) rejected: AtomicU64,
    /// Records whose handler kept failing.
    pub(crate) handler_failed: AtomicU64,
    /// Dead letters acknowledged by the broker.
    pub(crate) dead_lettered: AtomicU64,
    /// Successful offset commits.
    pub(crate) commits: AtomicU64,
    /// Assignments received (each completed group join or reconciliation).
    pub(crate) assignments: AtomicU64,
    /// Partitions revoked (given up cleanly, with a commit).
    pub(crate) revoked_partitions: AtomicU64,
    /// Partitions that stopped (shutdown or revocation) while a dead letter was still
    /// unacknowledged: the record stays uncommitted for the next owner, and a graceful stop
    /// reports it (the CLI exits non-zero).
    pub(crate) stalled_partitions: AtomicU64,
    /// Records handed out again at a place already handled or dead-lettered: skipped and
    /// committed, neither handled nor dead-lettered again (SPEC 3e).
    pub(crate) redelivered: AtomicU64,
    /// Records read back into the replay guard at assignment (SPEC 3e).
    pub(crate) read_back: AtomicU64,
    /// Read-backs cut short by a bound (logged as errors).
    pub(crate) read_back_cut: AtomicU64,
}

impl Stats {
    /// Every counter, read now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            handled: get(&self.handled),
            rejected: get(&self.rejected),
            handler_failed: get(&self.handler_failed),
            dead_lettered: get(&self.dead_lettered),
            commits: get(&self.commits),
            assignments: get(&self.assignments),
            revoked_partitions: get(&self.revoked_partitions),
            stalled_partitions: get(&self.stalled_partitions),
            redelivered: get(&self.redelivered),
            read_back: get(&self.read_back),
            read_back_cut: get(&self.read_back_cut),
        }
    }
}

/// A consumer's counters at one moment ([`Stats::snapshot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Records fetched.
    pub received: u64,
    /// Records a handler accepted.
    pub handled: u64,
    /// Records refused by verification.
    pub rejected: u64,
    /// Records whose handler kept failing.
    pub handler_failed: u64,
    /// Dead letters acknowledged by the broker.
    pub dead_lettered: u64,
    /// Successful offset commits.
    pub commits: u64,
    /// Assignments received (each completed group join or reconciliation).
    pub assignments: u64,
    /// Partitions revoked (given up cleanly, with a commit).
    pub revoked_partitions: u64,
    /// Partitions that stopped (shutdown or revocation) while a dead letter was still
    /// unacknowledged: the record stays uncommitted for the next owner, and a graceful stop
    /// reports it (the CLI exits non-zero).
    pub stalled_partitions: u64,
    /// Records handed out again at a place already handled or dead-lettered: skipped and
    /// committed, neither handled nor dead-lettered again (SPEC 3e).
    pub redelivered: u64,
    /// Records read back into the replay guard at assignment (SPEC 3e).
    pub read_back: u64,
    /// Read-backs cut short by a bound (logged as errors).
    pub read_back_cut: u64,
}

/// What `/readyz` needs to know of a consumer, kept current by the running consumer.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    /// Its first group join completed (an assignment, possibly empty, arrived).
    pub(crate) joined: std::sync::atomic::AtomicBool,
    /// It holds its assignment: joined and not lost since (a fence or an expired session
    /// clears this until the next join).
    pub(crate) holding: std::sync::atomic::AtomicBool,
    /// Its last poll succeeded (cleared by a failing poll, set by the next good one).
    pub(crate) polling: std::sync::atomic::AtomicBool,
    /// Partitions whose replay read-back (SPEC 3e) has not finished: not ready until 0.
    pub(crate) warming: std::sync::atomic::AtomicUsize,
}

impl ConsumerHealth {
    /// Its first group join completed (an assignment, possibly empty, arrived).
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// It holds its assignment: joined and not lost since.
    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// Its last poll succeeded.
    pub fn polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    /// Partitions whose replay read-back (SPEC 3e) has not finished.
    pub fn warming(&self) -> usize {
        self.warming.load(Ordering::Relaxed)
    }
}

/// Why the consumer stopped with an error (retriable broker trouble is retried, not returned).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// No handler registered: nothing to subscribe to.
    #[error("no handlers registered")]
    NoHandlers,
    /// Two handlers (or streams) were registered for one kind.
    #[error("two handlers registered for {0} records")]
    DuplicateHandler(Kind),
    /// A broker error that retrying cannot fix (TLS, authentication, protocol).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A partition's worker died (a panic outside the handler: a bug). The other partitions
    /// were stopped and their handled offsets committed; the crashed one's record was not.
    #[error("the worker of {topic}/{partition} panicked; the consumer stopped")]
    WorkerPanicked {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
}

/// Aborts a helper task when the consumer's run ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct Shared {
    config: Config,
    client: Client,
    verifier: Arc<Verifier>,
    producer: Arc<Producer>,
    handlers: BTreeMap<Kind, Arc<dyn Handler>>,
    metrics: Arc<Metrics>,
    /// The group id (everything else about the group is `config.consumer`).
    group: String,
    stats: Arc<Stats>,
    health: Arc<ConsumerHealth>,
    /// Read-backs running at once (SPEC 3e): each holds a fetch and the one being verified.
    warmup_slots: tokio::sync::Semaphore,
}

/// A verifying group consumer. Register handlers, then [`Consumer::run`].
pub struct Consumer {
    shared: Shared,
    tracker: Arc<OffsetTracker>,
    /// Whether the DLQ producer is this consumer's own (built by `connect`): closed by `run`.
    owns_producer: bool,
    /// A kind registered twice (refused by `run`).
    duplicate: Option<Kind>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.shared.group)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `group` on `client`, behaving as `config.consumer` says; `producer`
    /// writes dead letters to `KAFKA_DLQ_TOPIC`. Fails only on a configuration that does not
    /// [`validate`](Config::validate), naming the variable.
    pub fn new(
        client: Client,
        config: Config,
        verifier: Arc<Verifier>,
        producer: Arc<Producer>,
        metrics: Arc<Metrics>,
        group: impl Into<String>,
    ) -> Result<Consumer, crate::config::ConfigError> {
        config.validate()?;
        // Two partitions read back at a time, each on every verifying thread: one fetches while
        // the other verifies.
        let slots = 2;
        Ok(Consumer {
            shared: Shared {
                config,
                client,
                verifier,
                producer,
                handlers: BTreeMap::new(),
                metrics,
                group: group.into(),
                stats: Arc::new(Stats::default()),
                health: Arc::default(),
                warmup_slots: tokio::sync::Semaphore::new(slots),
            },
            tracker: Arc::default(),
            owns_producer: false,
            duplicate: None,
        })
    }

    /// Connects to the cluster and builds a consumer whose dead letters go out through a
    /// producer on the same connection pool (unsigned: dead letters are the original records).
    pub async fn connect(
        config: Config,
        verifier: Arc<Verifier>,
        metrics: Arc<Metrics>,
        group: impl Into<String>,
    ) -> Result<Consumer, KafkaError> {
        let client = Client::connect(&config).await?;
        let dlq = Arc::new(Producer::new(
            client.clone(),
            config.clone(),
            None,
            metrics.clone(),
        ));
        let mut c = Consumer::new(client, config, verifier, dlq, metrics, group)?;
        c.owns_producer = true;
        Ok(c)
    }

    /// Registers `handler` for every record of `kind` (the whole [`Message`](crate::contract::Message)),
    /// subscribing to its topic. For one message type, [`Consumer::on`] is simpler.
    pub fn handle(mut self, kind: Kind, handler: impl Handler) -> Self {
        self.route(kind, Arc::new(handler));
        self
    }

    /// Registers `handler` for the records of message type `T`, subscribing to its kind's
    /// topic:
    ///
    /// ```no_run
    /// # fn register(consumer: meshbus::consumer::Consumer) -> meshbus::consumer::Consumer {
    /// use meshbus::consumer::Verified;
    /// use meshbus::contract::AnomalyEvent;
    /// consumer.on(|r: Verified<AnomalyEvent>| async move {
    ///     println!("anomaly {} of severity {}", r.message.id, r.message.severity);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn on<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: KindOf,
        F: Fn(Verified<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.route(T::KIND, Arc::new(handler::Typed::new(handler)));
        self
    }

    /// Subscribes to the records of message type `T` as a [`Stream`](futures_core::Stream)
    /// of [`Received`] records, each acked, nacked or dropped by the reader (see [`VerifiedStream`]).
    /// The stream ends when the consumer stops.
    pub fn stream<T: KindOf>(&mut self) -> VerifiedStream<T> {
        let (feed, stream) = stream::channel::<T>();
        self.route(T::KIND, Arc::new(feed));
        stream
    }

    fn route(&mut self, kind: Kind, handler: Arc<dyn Handler>) {
        if self.shared.handlers.insert(kind, handler).is_some() {
            self.duplicate.get_or_insert(kind);
        }
    }

    /// Counters, shared with the running consumer.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Its readiness state, shared with the running consumer.
    pub fn health(&self) -> Arc<ConsumerHealth> {
        self.shared.health.clone()
    }

    /// The offset tracker (handled and committed offsets per partition held), shared with
    /// the running consumer.
    pub fn offsets(&self) -> Arc<OffsetTracker> {
        self.tracker.clone()
    }

    /// Consumes until `shutdown` completes, then stops the partitions (each finishes the record
    /// in hand), commits what was handled and leaves the group. Broker trouble is retried with
    /// backoff; only errors retrying cannot fix are returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        if self.shared.handlers.is_empty() {
            return Err(ConsumeError::NoHandlers);
        }
        if let Some(kind) = self.duplicate {
            return Err(ConsumeError::DuplicateHandler(kind));
        }
        let kinds: BTreeMap<String, Kind> = self
            .shared
            .handlers
            .keys()
            .map(|k| (self.shared.config.topic(*k).to_string(), *k))
            .collect();
        let spec = self.group_spec(&kinds);
        let commit_interval = self.shared.config.consumer.commit_interval;
        let owns_producer = self.owns_producer;
        let shared = Arc::new(self.shared);
        let assignment = Assignment::new(shared.clone(), kinds, self.tracker.clone());
        let consumer = Arc::new(
            shared
                .client
                .group_consumer(&spec, assignment.clone())
                .await?,
        );
        assignment.set_consumer(consumer.clone());
        let _watcher = AbortOnDrop(poll::watch_membership(&consumer, &assignment));
        let mut fetch = poll::PollLoop::new(
            spec.group.clone(),
            shared.clone(),
            consumer,
            assignment,
            self.tracker,
            commit_interval,
        );
        tokio::pin!(shutdown);
        loop {
            // A poll is never cut short by anything but shutdown: dropping one mid-fetch wastes
            // the broker's answer and desynchronises its fetch session (KIP-227).
            let polled = tokio::select! {
                _ = &mut shutdown => break,
                polled = fetch.poll() => polled,
            };
            fetch.handle(polled).await?;
            fetch.maintain().await?;
        }
        fetch.leave().await;
        if owns_producer {
            if let Err(e) = shared.producer.close().await {
                tracing::warn!(error = %e, "closing the DLQ producer failed");
            }
        }
        Ok(())
    }

    /// How this consumer joins its group.
    fn group_spec(&self, kinds: &BTreeMap<String, Kind>) -> GroupSpec {
        let c = &self.shared.config.consumer;
        GroupSpec {
            group: self.shared.group.clone(),
            topics: kinds.keys().cloned().collect(),
            assignors: c.assignors.clone(),
            session_timeout: c.session_timeout,
            heartbeat_interval: c.heartbeat_interval,
            rebalance_timeout: c.rebalance_timeout,
            start_earliest: c.start_from == crate::config::StartFrom::Earliest,
            fetch_max_bytes: c.fetch_max_bytes,
            fetch_max_wait: c.fetch_max_wait.max(Duration::from_millis(1)),
            instance_id: c.group_instance_id.clone(),
            protocol: c.group_protocol,
        }
    }
}
