//! Building blocks for consumer tests: verifiers on the vectors' clock, producers, consumers
//! with recording handlers, and waiting for conditions.
#![allow(dead_code)]

use super::vectors::{self, Vectors};
use meshbus::config::Config;
use meshbus::consumer::{Consumed, Consumer};
use meshbus::contract::{
    FixedClock, Kind, Signer, SigningDomains, TrustStore, Verifier, VerifierConfig,
};
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A verifier on the vectors' clock trusting the vectors' control keys.
pub fn verifier(v: &Vectors) -> Arc<Verifier> {
    let trust = TrustStore::from_keys(
        v.trusted_control_keys
            .iter()
            .map(|k| meshbus::contract::keys::decode_hex32(k).unwrap()),
    );
    Arc::new(Verifier::with_clock(
        VerifierConfig::default(),
        trust,
        Arc::new(FixedClock::at_secs(v.now)),
    ))
}

/// The AI producer's signer on the vectors' clock.
pub fn ai_signer(v: &Vectors) -> Arc<Signer> {
    Arc::new(Signer::with_clock(
        vectors::seed(&v.keys.ai_producer_seed_hex),
        0,
        SigningDomains::default(),
        Arc::new(FixedClock::at_secs(v.now)),
    ))
}

/// The backend's (trusted control) signer on the vectors' clock.
pub fn control_signer(v: &Vectors) -> Arc<Signer> {
    Arc::new(Signer::with_clock(
        vectors::seed(&v.keys.control_signer_seed_hex),
        0,
        SigningDomains::default(),
        Arc::new(FixedClock::at_secs(v.now)),
    ))
}

/// A producer over the broker's SASL_SSL listener.
pub async fn producer(config: &Config, signer: Option<Arc<Signer>>) -> Arc<Producer> {
    let t = Client::connect(config).await.expect("connect");
    Arc::new(Producer::new(t, config.clone(), signer, Metrics::new()))
}

/// `config` with quick membership timing for tests (a killed member is noticed in 6 s), and
/// fetches and commits every 200 ms.
pub fn quick(config: &Config) -> Config {
    let mut c = config.clone();
    c.consumer.session_timeout = QUICK_SESSION;
    c.consumer.rebalance_timeout = Duration::from_secs(15);
    c.consumer.heartbeat_interval = Duration::from_millis(500);
    c.consumer.fetch_max_wait = Duration::from_millis(200);
    c.consumer.commit_interval = Duration::from_millis(200);
    c
}

/// The session timeout of [`quick`].
pub const QUICK_SESSION: Duration = Duration::from_secs(6);

/// Handled records as (topic, partition, offset).
pub type Seen = Arc<Mutex<Vec<(String, i32, i64)>>>;

/// A consumer of `group`, set up as `config` says, whose handlers record every record of
/// `kinds` into the returned list.
pub async fn recording_consumer(
    config: &Config,
    group: &str,
    verifier: Arc<Verifier>,
    kinds: &[Kind],
) -> (Consumer, Seen, Arc<Metrics>) {
    let metrics = Metrics::new();
    let mut c = Consumer::connect(config.clone(), verifier, metrics.clone(), group)
        .await
        .expect("connect");
    let seen: Seen = Arc::default();
    for k in kinds {
        let seen = seen.clone();
        c = c.handle(*k, move |r: Consumed| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((r.topic, r.partition, r.offset));
                Ok(())
            }
        });
    }
    (c, seen, metrics)
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A consumer running in a task: its stop switch and its result.
pub type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), meshbus::consumer::ConsumeError>>,
);

/// Starts `consumer.run` in a task; dropping or sending on the returned sender stops it.
pub fn spawn(consumer: Consumer) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = rx.await;
    }));
    (tx, task)
}

/// Waits until `group` has committed the end offset of every non-empty partition of `topic`;
/// returns whether it did within `limit`, and the end offsets.
pub async fn commits_reach_end(
    b: &super::broker::Broker,
    group: &str,
    topic: &str,
    limit: Duration,
) -> (bool, std::collections::BTreeMap<(String, i32), i64>) {
    let ends: std::collections::BTreeMap<_, _> = b
        .end_offsets(&[topic])
        .into_iter()
        .filter(|(_, e)| *e > 0)
        .collect();
    let reached = wait_for(limit, || {
        let c = b.committed(group);
        ends.iter().all(|(tp, e)| c.get(tp) == Some(e))
    })
    .await;
    (reached, ends)
}

/// A consumer of `group` handling anomalies with the vectors' verifier on [`quick`] timing,
/// recording what it handles, already running: its record list, counters and stop switch.
pub async fn running_anomaly_consumer(
    config: &Config,
    group: &str,
    v: &Vectors,
) -> (Seen, Arc<meshbus::consumer::Stats>, Running) {
    let (c, seen, _) =
        recording_consumer(&quick(config), group, verifier(v), &[Kind::Anomaly]).await;
    let stats = c.stats();
    (seen, stats, spawn(c))
}

/// Waits until `stats` shows exactly `handled` handled and `dead` dead-lettered records.
pub async fn wait_counts(
    stats: &meshbus::consumer::Stats,
    handled: u64,
    dead: u64,
    limit: Duration,
) -> bool {
    wait_for(limit, || {
        let meshbus::consumer::StatsSnapshot {
            handled: h,
            dead_lettered: d,
            ..
        } = stats.snapshot();
        h == handled && d == dead
    })
    .await
}
