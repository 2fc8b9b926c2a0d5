//! The verifying group consumer (SPEC 6): joins a group, fetches its partitions, verifies every
//! record with the contract verifier, hands typed messages to handlers in partition order,
//! dead-letters what fails (SPEC 7), and commits an offset only once its record was handled or
//! its dead letter acknowledged. Shutdown commits and leaves the group.
//!
//! Delivery is at least once: after a crash or a lost commit, records since the last commit
//! are handed out again.

mod assignor;
mod group;
mod partition;

pub use assignor::Assignor;
pub use group::{GroupTiming, Heartbeat};

use crate::config::Config;
use crate::contract::{Kind, Message, Verifier};
use crate::metrics::Metrics;
use crate::producer::Producer;
use crate::protocol::offsets::TopicPartition;
use crate::protocol::Cluster;
use crate::transport::{Transport, TransportError};
use group::Membership;
use partition::{Backoff, PartitionWorker, Progress};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A verified record handed to a handler.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The verified, typed message.
    pub message: Message,
}

/// What a handler returns: `Err` with a human-readable reason means "retry, then dead-letter".
pub type HandlerResult = Result<(), String>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// Something that handles verified records of one kind. Closures
/// `Fn(Consumed) -> impl Future<Output = HandlerResult>` are handlers.
pub trait Handler: Send + Sync + 'static {
    /// Handles one record. Must tolerate redelivery (delivery is at least once).
    fn handle(&self, record: Consumed) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Consumed) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn handle(&self, record: Consumed) -> HandlerFuture {
        Box::pin(self(record))
    }
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record kept (the default: a security consumer should not skip history).
    Earliest,
    /// Only records produced after joining.
    Latest,
}

/// How a consumer behaves in its group.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Group id.
    pub group: String,
    /// Assignors offered, preferred first.
    pub assignors: Vec<Assignor>,
    /// Membership timing.
    pub timing: GroupTiming,
    /// Start for partitions without a committed offset.
    pub start_from: StartFrom,
    /// Largest fetch response.
    pub fetch_max_bytes: i32,
    /// Longest a fetch waits for new records (ms).
    pub fetch_max_wait_ms: i32,
    /// How often handled offsets are committed while running.
    pub commit_interval: Duration,
}

impl ConsumerOptions {
    /// Options for `group`.
    pub fn new(group: impl Into<String>) -> Self {
        ConsumerOptions {
            group: group.into(),
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
            timing: GroupTiming::default(),
            start_from: StartFrom::Earliest,
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait_ms: 500,
            commit_interval: Duration::from_millis(500),
        }
    }

    /// A validator: one group per node, `<KAFKA_CONSUMER_GROUP>-node-<NODE_ID>` (SPEC 1).
    pub fn validator(config: &Config) -> Self {
        Self::new(config.group_for(true))
    }

    /// Any other role: `KAFKA_CONSUMER_GROUP` as is, partitions shared.
    pub fn shared(config: &Config) -> Self {
        Self::new(config.group_for(false))
    }
}

/// Counts since the consumer was made.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records fetched.
    pub received: AtomicU64,
    /// Records a handler accepted.
    pub handled: AtomicU64,
    /// Records refused by verification.
    pub rejected: AtomicU64,
    /// Records whose handler kept failing.
    pub handler_failed: AtomicU64,
    /// Dead letters acknowledged by the broker.
    pub dead_lettered: AtomicU64,
    /// Successful offset commits.
    pub commits: AtomicU64,
}

impl Stats {
    fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    /// `(received, handled, rejected, handler_failed, dead_lettered)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            Self::get(&self.received),
            Self::get(&self.handled),
            Self::get(&self.rejected),
            Self::get(&self.handler_failed),
            Self::get(&self.dead_lettered),
        )
    }
}

/// Why the consumer stopped with an error (retriable broker trouble is retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// No handler registered: nothing to subscribe to.
    #[error("no handlers registered")]
    NoHandlers,
    /// A broker error that retrying cannot fix (TLS, authentication, protocol).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

pub(crate) struct Shared {
    config: Config,
    transport: Transport,
    verifier: Arc<Verifier>,
    producer: Arc<Producer>,
    handlers: BTreeMap<Kind, Arc<dyn Handler>>,
    metrics: Arc<Metrics>,
    options: ConsumerOptions,
    stats: Arc<Stats>,
}

/// A verifying group consumer. Register handlers, then [`Consumer::run`].
pub struct Consumer {
    shared: Shared,
    cluster: Cluster,
    committed: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.shared.options.group)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer on `transport`; `producer` writes dead letters to `KAFKA_DLQ_TOPIC`.
    pub fn new(
        transport: Transport,
        config: Config,
        verifier: Arc<Verifier>,
        producer: Arc<Producer>,
        metrics: Arc<Metrics>,
        options: ConsumerOptions,
    ) -> Result<Consumer, TransportError> {
        Ok(Consumer {
            cluster: Cluster::new(&config)?,
            shared: Shared {
                config,
                transport,
                verifier,
                producer,
                handlers: BTreeMap::new(),
                metrics,
                options,
                stats: Arc::new(Stats::default()),
            },
            committed: Arc::default(),
        })
    }

    /// Connects to the broker and builds a consumer whose dead letters go out through a
    /// producer of its own (unsigned: dead letters are the original records).
    pub async fn connect(
        config: Config,
        verifier: Arc<Verifier>,
        metrics: Arc<Metrics>,
        options: ConsumerOptions,
    ) -> Result<Consumer, TransportError> {
        let transport = Transport::connect(&config).await?;
        let dlq = Arc::new(Producer::new(
            transport.clone(),
            config.clone(),
            None,
            metrics.clone(),
        ));
        Consumer::new(transport, config, verifier, dlq, metrics, options)
    }

    /// Registers the handler for `kind`, subscribing to its topic.
    pub fn handle(mut self, kind: Kind, handler: impl Handler) -> Self {
        self.shared.handlers.insert(kind, Arc::new(handler));
        self
    }

    /// Counters, shared with the running consumer.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The offsets this consumer has committed (next offset to read), shared with the running
    /// consumer.
    pub fn committed_offsets(&self) -> Arc<Mutex<BTreeMap<TopicPartition, i64>>> {
        self.committed.clone()
    }

    /// Consumes until `shutdown` completes, then stops the partitions (each finishes the record
    /// in hand), commits what was handled and leaves the group. Broker trouble is retried with
    /// backoff; only errors retrying cannot fix are returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumeError> {
        if self.shared.handlers.is_empty() {
            return Err(ConsumeError::NoHandlers);
        }
        let topics: BTreeMap<String, Kind> = self
            .shared
            .handlers
            .keys()
            .map(|k| (self.shared.config.topic(*k).to_string(), *k))
            .collect();
        let topic_list: Vec<String> = topics.keys().cloned().collect();
        let opts = self.shared.options.clone();
        let shared = Arc::new(self.shared);
        let committed_view = self.committed;
        let mut member = Membership::new(
            self.cluster,
            shared.transport.clone(),
            opts.group.clone(),
            opts.assignors.clone(),
            opts.timing.clone(),
        );
        tokio::pin!(shutdown);
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            // Join and learn where to start.
            let joined = tokio::select! {
                _ = &mut shutdown => {
                    member.leave().await;
                    return Ok(());
                }
                r = async {
                    let parts = member.join(&topic_list).await?;
                    let committed = member.committed(&parts).await?;
                    Ok::<_, TransportError>((parts, committed))
                } => r,
            };
            let (assignment, committed) = match joined {
                Ok(j) => j,
                Err(e) if e.is_retriable() => {
                    tracing::warn!(group = %opts.group, error = %e, "joining the group failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => {
                            member.leave().await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep(retry.next_delay()) => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            retry.reset();
            tracing::info!(group = %opts.group, generation = member.generation, partitions = ?assignment, "assigned");
            *committed_view.lock().unwrap_or_else(|p| p.into_inner()) = committed.clone();
            let (stop_tx, stop_rx) = watch::channel(false);
            let progress: Progress = Arc::new(Mutex::new(committed.clone()));
            let mut workers = Workers(
                assignment
                    .iter()
                    .filter_map(|tp| {
                        let kind = *topics.get(&tp.0)?;
                        Some(tokio::spawn(
                            PartitionWorker {
                                shared: shared.clone(),
                                tp: tp.clone(),
                                kind,
                                start: committed.get(tp).copied(),
                                stop: stop_rx.clone(),
                                progress: progress.clone(),
                            }
                            .run(),
                        ))
                    })
                    .collect(),
            );
            let mut heartbeat = tokio::time::interval(opts.timing.heartbeat_interval);
            let mut commit = tokio::time::interval(opts.commit_interval);
            let mut last_heartbeat = Instant::now();
            // Stop before the coordinator can have given our partitions to someone else.
            let give_up = opts
                .timing
                .session_timeout
                .saturating_sub(opts.timing.heartbeat_interval * 2);
            let shutting_down = loop {
                tokio::select! {
                    _ = &mut shutdown => break true,
                    _ = heartbeat.tick() => match member.heartbeat().await {
                        Ok(Heartbeat::Stable) => last_heartbeat = Instant::now(),
                        Ok(Heartbeat::Rebalance) => break false,
                        Err(e) => {
                            tracing::warn!(group = %opts.group, error = %e, "heartbeat failed");
                            if last_heartbeat.elapsed() >= give_up {
                                break false;
                            }
                        }
                    },
                    _ = commit.tick() => {
                        commit_progress(&mut member, &progress, &committed_view, &shared.stats).await;
                    }
                }
            };
            let _ = stop_tx.send(true);
            for w in workers.0.drain(..) {
                let _ = w.await;
            }
            commit_progress(&mut member, &progress, &committed_view, &shared.stats).await;
            if shutting_down {
                member.leave().await;
                return Ok(());
            }
            tracing::info!(group = %opts.group, "rebalancing");
        }
    }
}

/// The partition tasks of one generation; aborted if `run` is dropped (a crash must not leave
/// them handling records without a member behind them).
struct Workers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &self.0 {
            w.abort();
        }
    }
}

/// Commits the handled offsets that moved since the last commit.
async fn commit_progress(
    member: &mut Membership,
    progress: &Progress,
    committed: &Mutex<BTreeMap<TopicPartition, i64>>,
    stats: &Stats,
) {
    let now = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let changed: BTreeMap<_, _> = {
        let done = committed.lock().unwrap_or_else(|p| p.into_inner());
        now.into_iter()
            .filter(|(tp, o)| done.get(tp) != Some(o))
            .collect()
    };
    if changed.is_empty() {
        return;
    }
    match member.commit(&changed).await {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            committed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(changed);
        }
        Err(e) => {
            tracing::warn!(group = %member.group, error = %e, "offset commit failed; records since the last commit may be redelivered")
        }
    }
}
