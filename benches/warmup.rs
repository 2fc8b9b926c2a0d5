//! The replay guard's read-back (SPEC 3e) against the local broker (Apache Kafka, TLS + SCRAM):
//! a window of signed 1 KiB anomalies on one partition, already handled and committed by the
//! group, is read back by a restarted member before it handles anything. Reported for 1 and 2
//! verifying threads (`KAFKA_REPLAY_WARMUP_THREADS`): records/s of the read-back as the
//! consumer times it (`meshbus_replay_warmup_seconds`), and the process's CPU seconds per 100k
//! records over it.
//!
//! `cargo bench --bench warmup` (MESHBUS_BENCH_RECORDS, default 100000).

#[path = "../tests/common/broker.rs"]
mod broker;
#[path = "../src/cli/sample.rs"]
mod sample;

use broker::cpu_seconds;
use meshbus::consumer::{Consumed, Consumer};
use meshbus::contract::{Kind, Signer, TrustStore, Verifier, VerifierConfig};
use meshbus::metrics::Metrics;
use prost::Message as _;
use std::sync::Arc;
use std::time::Duration;

const SIZE: usize = 1024;
const TOPIC: &str = "bench.warmup";
const GROUP: &str = "bench-warmup";

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MESHBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 100_000 } else { 300 });
    let b = broker::Broker::start(&[]);
    b.create_topics(1, &[], &[TOPIC]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signer = Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
        1,
        Default::default(),
    );
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, TOPIC.into());
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            signer
                .sign_ai(sample::anomaly(i as u64, SIZE))
                .encode_to_vec()
        })
        .collect();
    let rows = rt.block_on(async {
        let p = meshbus::producer::Producer::new(
            meshbus::kafka::Client::connect(&config).await.unwrap(),
            config.clone(),
            None,
            Metrics::new(),
        );
        let p = Arc::new(p);
        let mut set = tokio::task::JoinSet::new();
        for r in records {
            if set.len() >= 512 {
                set.join_next().await.unwrap().unwrap();
            }
            let p = p.clone();
            set.spawn(async move {
                p.send_raw(TOPIC, None, r, Default::default())
                    .await
                    .unwrap();
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // The group handles and commits the whole window once (no read-back: nothing committed).
        let first = run_member(&config, 0, n, false).await;
        assert_eq!(first.0, 0, "a group without commits read back {}", first.0);
        let mut rows = Vec::new();
        for threads in [1, 2] {
            rows.push((threads, run_member(&config, threads, n, true).await));
        }
        rows
    });
    println!("\nreplay read-back benchmark: a window of {n} signed anomalies of ~{SIZE} B payload on one partition, TLS+SCRAM-SHA-512, local Apache Kafka");
    println!(
        "{:<44} {:>12} {:>22}",
        "", "records/s", "CPU s per 100k records"
    );
    for (threads, (read, seconds, cpu)) in rows {
        assert_eq!(read, n as u64, "read back {read} of {n}");
        println!(
            "{:<44} {:>12.0} {:>22.2}",
            format!("read-back, {threads} verifying thread(s)"),
            read as f64 / seconds,
            cpu * 100_000.0 / n as f64
        );
    }
}

/// A fresh member of the group (a fresh verifier: an empty guard) with `threads` read-back
/// threads: `(records read back, read-back seconds, CPU seconds)`. With `warm_only` it stops
/// once the read-back is done; else once it handled `n` records and committed them.
async fn run_member(
    config: &meshbus::config::Config,
    threads: usize,
    n: usize,
    warm_only: bool,
) -> (u64, f64, f64) {
    let mut config = config.clone();
    config.consumer.warmup.threads = threads;
    let metrics = Metrics::new();
    config.consumer.commit_interval = Duration::from_millis(100);
    let verifier = Arc::new(Verifier::new(
        VerifierConfig::default(),
        TrustStore::from_keys([]),
    ));
    let consumer = Consumer::connect(config, verifier, metrics.clone(), GROUP)
        .await
        .unwrap()
        .handle(Kind::Anomaly, |_r: Consumed| async { Ok(()) });
    let (stats, offsets) = (consumer.stats(), consumer.offsets());
    let c0 = cpu_seconds();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = rx.await;
    }));
    loop {
        let done = if warm_only {
            stats.snapshot().read_back >= n as u64
        } else {
            offsets
                .progress()
                .values()
                .filter_map(|p| p.committed)
                .sum::<i64>()
                >= n as i64
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = cpu_seconds() - c0;
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    let seconds = histogram_sum(&metrics.encode(), "meshbus_replay_warmup_seconds_sum");
    (stats.snapshot().read_back, seconds, cpu)
}

fn histogram_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
