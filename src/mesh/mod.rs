//! One handle for a process's mesh client: the connection pool, the metrics registry, the
//! verifier, one signing producer and the consumers a role registers, under one lifecycle.
//!
//! ```no_run
//! # async fn role() -> Result<(), Box<dyn std::error::Error>> {
//! use meshbus::config::Config;
//! use meshbus::consumer::Verified;
//! use meshbus::contract::{AnomalyEvent, TrustStore};
//! use meshbus::mesh::Mesh;
//!
//! let config = Config::from_env()?;
//! let mut mesh = Mesh::builder(config.clone())
//!     .trust(TrustStore::from_dir("trust".as_ref())?)
//!     .connect()
//!     .await?;
//! let validator = mesh
//!     .consumer(config.validator_group())?
//!     .on(|r: Verified<AnomalyEvent>| async move {
//!         println!("anomaly {} from {}", r.message.id, r.message.source);
//!         Ok(())
//!     });
//! mesh.register(validator);
//! mesh.start();
//! tokio::signal::ctrl_c().await?;
//! let report = mesh.shutdown(config.shutdown_timeout).await;
//! assert!(report.is_clean(), "{report}");
//! # Ok(()) }
//! ```

mod builder;
mod reload;
pub mod roles;

pub use builder::{MeshBuilder, MeshError};

pub use reload::CHECK_EVERY as TRUST_CHECK_EVERY;

use crate::config::{Config, ConfigError};
use crate::consumer::{ConsumeError, Consumer, ConsumerHealth, Stats};
use crate::contract::{Signer, Verifier};
use crate::kafka::{Client, KafkaError};
use crate::metrics::http::Readiness;
use crate::metrics::Metrics;
use crate::producer::{BreakerState, Producer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

/// A process's mesh client. Build it with [`Mesh::builder`], register consumers, [`Mesh::start`]
/// them, send through [`Mesh::producer`], and end with [`Mesh::shutdown`].
pub struct Mesh {
    config: Config,
    client: Client,
    metrics: Arc<Metrics>,
    verifier: Arc<Verifier>,
    producer: Arc<Producer>,
    dead_letters: Arc<Producer>,
    registered: Vec<Consumer>,
    stats: Vec<Arc<Stats>>,
    health: Arc<std::sync::Mutex<Vec<Arc<ConsumerHealth>>>>,
    running: JoinSet<Result<(), ConsumeError>>,
    ended: Vec<String>,
    stop: watch::Sender<bool>,
    helpers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.config.node_id)
            .field("consumers", &self.stats.len())
            .finish_non_exhaustive()
    }
}

/// What a graceful stop achieved. Sends are counted from the moment the stop began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Sends in flight when the stop began.
    pub in_flight_at_start: u64,
    /// Sends acknowledged after the stop began (the flushed ones).
    pub flushed: u64,
    /// Sends that failed after the stop began (the caller got the error).
    pub failed: u64,
    /// Sends refused with `SendError::Closed` after the stop began.
    pub refused: u64,
    /// Sends neither acknowledged nor failed when the deadline passed.
    pub unflushed: u64,
    /// Partitions that stopped while a dead letter was unacknowledged: their record was not
    /// committed and goes to the partition's next owner.
    pub stalled_partitions: u64,
    /// Consumer errors and failures to close, as text.
    pub errors: Vec<String>,
    /// True when the deadline cut a step short.
    pub timed_out: bool,
}

impl ShutdownReport {
    /// Nothing unflushed, failed or stalled, no error, and within the deadline.
    pub fn is_clean(&self) -> bool {
        self.unflushed == 0
            && self.failed == 0
            && self.stalled_partitions == 0
            && self.errors.is_empty()
            && !self.timed_out
    }
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in flight at stop {}, flushed {}, failed {}, refused {}, unflushed {}, stalled partitions {}{}{}",
            self.in_flight_at_start,
            self.flushed,
            self.failed,
            self.refused,
            self.unflushed,
            self.stalled_partitions,
            if self.timed_out { ", deadline passed" } else { "" },
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", self.errors.join("; "))
            }
        )
    }
}

impl Mesh {
    /// The one way to make a mesh: see [`MeshBuilder`].
    pub fn builder(config: Config) -> MeshBuilder {
        MeshBuilder::new(config)
    }

    /// Connects with the parts the builder checked.
    async fn connect_parts(
        config: Config,
        signer: Option<Signer>,
        verifier: Verifier,
        metrics: Arc<Metrics>,
    ) -> Result<Mesh, KafkaError> {
        let client = Client::connect(&config).await?;
        let producer = Producer::new(
            client.clone(),
            config.clone(),
            signer.map(Arc::new),
            metrics.clone(),
        );
        let dead_letters = Arc::new(producer.dead_letter_handle());
        Ok(Mesh {
            config,
            client,
            metrics,
            verifier: Arc::new(verifier),
            producer: Arc::new(producer),
            dead_letters,
            registered: Vec::new(),
            stats: Vec::new(),
            health: Arc::default(),
            running: JoinSet::new(),
            ended: Vec::new(),
            stop: watch::channel(false).0,
            helpers: Vec::new(),
        })
    }

    /// The signing producer (acks=all, rate-limited as configured).
    pub fn producer(&self) -> &Arc<Producer> {
        &self.producer
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection pool.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A consumer on this mesh's connections, verifier and dead-letter producer; add handlers,
    /// then [`Mesh::register`] it.
    pub fn consumer(&self, group: impl Into<String>) -> Result<Consumer, ConfigError> {
        Consumer::new(
            self.client.clone(),
            self.config.clone(),
            self.verifier.clone(),
            self.dead_letters.clone(),
            self.metrics.clone(),
            group,
        )
    }

    /// Takes a consumer into the mesh's lifecycle (started by [`Mesh::start`], or at once if
    /// the mesh is already started); returns its counters.
    pub fn register(&mut self, consumer: Consumer) -> Arc<Stats> {
        let stats = consumer.stats();
        self.stats.push(stats.clone());
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(consumer.health());
        self.registered.push(consumer);
        if *self.stop.borrow() || !self.running.is_empty() || !self.ended.is_empty() {
            self.start();
        }
        stats
    }

    /// What `/readyz` checks, evaluated when asked:
    /// - `connected`: every running consumer's last poll succeeded (a producer-only role is
    ///   connected once `connect` succeeded);
    /// - `group_joined`: every registered consumer completed its first group join;
    /// - `assignment_held`: none has lost its assignment since (fenced, or no heartbeat
    ///   answered within two thirds of the session: a cluster that went away shows here
    ///   first, since a poll against it waits rather than fails);
    /// - `replay_guard_warm`: every assigned `ai.*` partition was read back into the replay
    ///   guard (SPEC 3e);
    /// - `breaker_closed`: the producer's circuit breaker is closed;
    /// - `accepting_sends`: no shutdown has begun.
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        let health = self.health.clone();
        let producer = self.producer.clone();
        Arc::new(move || {
            let consumers = health.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let all = |f: fn(&ConsumerHealth) -> bool| consumers.iter().all(|h| f(h));
            vec![
                ("connected", all(|h| h.polling())),
                ("group_joined", all(|h| h.joined())),
                ("assignment_held", all(|h| h.holding())),
                ("replay_guard_warm", all(|h| h.warming() == 0)),
                (
                    "breaker_closed",
                    producer.breaker_state() == BreakerState::Closed,
                ),
                ("accepting_sends", !producer.is_closed()),
            ]
        })
    }

    /// Keeps the control trust store in line with `sources` (`--trust` items: directories
    /// with an optional `validator_registry.json`, PEM or hex key files, hex keys): loads them
    /// now (an error here is the caller's), then again whenever their files change and
    /// whenever `trigger` fires (the command passes SIGHUP). A later source that does not load
    /// keeps the last good store in force, is logged naming the file and counted in
    /// `meshbus_trust_reload_failures_total{file}`; `meshbus_trust_keys` shows the keys in
    /// force.
    pub fn watch_trust(
        &mut self,
        sources: Vec<String>,
        trigger: Option<watch::Receiver<u64>>,
    ) -> Result<(), crate::contract::trust::TrustError> {
        let store = crate::contract::TrustStore::load(&sources)?;
        self.metrics.trust_keys.set(store.len() as i64);
        self.verifier.replace_trust(store);
        let (verifier, metrics) = (self.verifier.clone(), self.metrics.clone());
        let watched = sources.clone();
        self.helpers.push(reload::spawn(watched, trigger, move || {
            reload::reload(&verifier, &sources, &metrics);
        }));
        Ok(())
    }

    /// Loads the `ai.policy.v1` allowlist from `path` (`AI_POLICY_ALLOWED_PUBKEYS_FILE`: hex
    /// keys separated by commas, spaces or newlines) into the verifier, then reloads it when the
    /// file changes and when `trigger` fires (SIGHUP in the command). A file that does not load
    /// keeps the last good list, is logged and counted in
    /// `meshbus_trust_reload_failures_total{file}`.
    pub fn watch_policy_allowlist(
        &mut self,
        path: std::path::PathBuf,
        trigger: Option<watch::Receiver<u64>>,
    ) -> Result<(), crate::contract::trust::TrustError> {
        let keys = crate::contract::trust::load_allowlist(&path)?;
        self.metrics.policy_allowlist_keys.set(keys.len() as i64);
        self.verifier.replace_policy_allowlist(Some(keys));
        let (verifier, metrics) = (self.verifier.clone(), self.metrics.clone());
        let watched = vec![path.display().to_string()];
        self.helpers.push(reload::spawn(watched, trigger, move || {
            reload::reload_allowlist(&verifier, &path, &metrics);
        }));
        Ok(())
    }

    /// The verifier every consumer of this mesh uses.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Runs every registered consumer until [`Mesh::shutdown`].
    pub fn start(&mut self) {
        for c in self.registered.drain(..) {
            let mut stop = self.stop.subscribe();
            self.running.spawn(c.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
        }
    }

    /// Completes when a running consumer ends on its own (an error retrying cannot fix);
    /// never completes while all keep running. The error is also in the shutdown report.
    pub async fn consumer_ended(&mut self) -> String {
        match self.running.join_next().await {
            Some(r) => {
                let what = match r {
                    Ok(Ok(())) => "consumer stopped".to_string(),
                    Ok(Err(e)) => format!("consumer failed: {e}"),
                    Err(e) => format!("consumer task failed: {e}"),
                };
                self.ended.push(what.clone());
                what
            }
            None => std::future::pending().await,
        }
    }

    /// Stops gracefully within `deadline`: refuses new sends, flushes the sends in flight,
    /// stops the consumers (each partition finishes the record in hand, handled offsets are
    /// committed, the groups are left), then flushes the dead letters and closes the
    /// connections. Returns what was flushed and what failed.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let end = Instant::now() + deadline;
        for h in self.helpers.drain(..) {
            h.abort();
        }
        let start = self.producer.counts();
        let mut report = ShutdownReport {
            in_flight_at_start: start.in_flight,
            errors: std::mem::take(&mut self.ended),
            ..Default::default()
        };
        self.producer.stop_accepting();
        if timeout_at(end, self.producer.flush()).await.is_err() {
            report.timed_out = true;
        }
        self.stop.send_replace(true);
        loop {
            match timeout_at(end, self.running.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok(Ok(())))) => {}
                Ok(Some(Ok(Err(e)))) => report.errors.push(format!("consumer failed: {e}")),
                Ok(Some(Err(e))) => report.errors.push(format!("consumer task failed: {e}")),
                Err(_) => {
                    report.timed_out = true;
                    report.errors.push(format!(
                        "{} consumer(s) did not stop within the deadline",
                        self.running.len()
                    ));
                    self.running.abort_all();
                    break;
                }
            }
        }
        match timeout_at(end, self.dead_letters.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.errors.push(format!("closing the producer: {e}")),
            Err(_) => report.timed_out = true,
        }
        let now = self.producer.counts();
        report.flushed = now.acknowledged - start.acknowledged;
        report.failed = now.failed - start.failed;
        report.refused = now.refused_closed - start.refused_closed;
        report.unflushed = now.in_flight;
        report.stalled_partitions = self
            .stats
            .iter()
            .map(|s| s.snapshot().stalled_partitions)
            .sum();
        report
    }
}
