//! Consume benchmark against the local broker (Apache Kafka, TLS + SCRAM), in one run:
//! - the bare verify rate (SHA-256 + Ed25519 verify, one core) and the full SPEC 4 verifier
//!   rate on the same records, in process;
//! - the meshbus group consumer: fetch + verify + handler + offset commit of signed 1 KiB
//!   anomalies, timed from `run` until every record was handled and its offset committed;
//! - meshbus's Kafka layer alone (`kafka::GroupConsumer`: fetch + decode, no verification);
//! - librdkafka (confluent-kafka), the Java client and Sarama group consumers reading the same
//!   topic without verification (each in a fresh group, committing at the end).
//!
//! `cargo bench --bench consume` (MESHBUS_BENCH_RECORDS, default 20000).

#[path = "../tests/common/broker.rs"]
mod broker;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use meshbus::consumer::{Consumed, Consumer, ConsumerOptions};
#[path = "../src/cli/sample.rs"]
mod sample;
use meshbus::contract::{Kind, Signer, TrustStore, Verifier, VerifierConfig};
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: usize = 1024;
const TOPIC: &str = "bench.consume";

use broker::cpu_seconds;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MESHBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 20_000 } else { 300 });
    let b = broker::Broker::start(&[TOPIC]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signer = Arc::new(Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        1,
    ));
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, TOPIC.into());
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            signer
                .sign_ai(sample::anomaly(i as u64, SIZE))
                .encode_to_vec()
        })
        .collect();

    // In-process rates on the same records.
    let key = VerifyingKey::from_bytes(&signer.public_key()).unwrap();
    let t0 = Instant::now();
    for r in &records {
        let m = meshbus::contract::messages::AnomalyEvent::decode(r.as_slice()).unwrap();
        let digest = Sha256::digest(&m.payload);
        let bytes = meshbus::contract::signing::ai_message_sign_bytes(&m);
        let sig = Signature::from_slice(&m.signature).unwrap();
        assert!(key.verify(&bytes, &sig).is_ok() && digest.len() == 32);
    }
    let bare = n as f64 / t0.elapsed().as_secs_f64();
    let verifier = Verifier::new(VerifierConfig::default(), TrustStore::from_keys([]));
    let t0 = Instant::now();
    for r in &records {
        verifier.verify(Kind::Anomaly, r).unwrap();
    }
    let full = n as f64 / t0.elapsed().as_secs_f64();

    let (seconds, cpu) = rt.block_on(async {
        let t = Client::connect(&config).await.unwrap();
        let p = Arc::new(Producer::new(
            t.clone(),
            config.clone(),
            None,
            Metrics::new(),
        ));
        let mut set = tokio::task::JoinSet::new();
        for r in records.iter().cloned() {
            let p = p.clone();
            set.spawn(async move {
                p.send_raw(TOPIC, None, r, Default::default())
                    .await
                    .unwrap();
            });
        }
        while set.join_next().await.is_some() {}

        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let mut options = ConsumerOptions::new("bench-meshbus");
        options.commit_interval = Duration::from_millis(100);
        let consumer = Consumer::new(
            t,
            config.clone(),
            Arc::new(Verifier::new(
                VerifierConfig::default(),
                TrustStore::from_keys([]),
            )),
            p,
            Metrics::new(),
            options,
        )
        .unwrap()
        .handle(Kind::Anomaly, move |_r: Consumed| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        });
        let offsets = consumer.offsets();
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(consumer.run(async move {
            let _ = rx.await;
        }));
        loop {
            let done = handled.load(Ordering::Relaxed) >= n as u64
                && offsets
                    .progress()
                    .values()
                    .filter_map(|p| p.committed)
                    .sum::<i64>()
                    >= n as i64;
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let out = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        out
    });

    // meshbus's Kafka layer without the verifying pipeline.
    let (raw_s, raw_cpu) = rt.block_on(async {
        struct Quiet;
        impl meshbus::kafka::RebalanceEvents for Quiet {
            fn assigned(self: Arc<Self>, _: Vec<(String, i32)>) -> meshbus::kafka::EventFuture {
                Box::pin(async {})
            }
            fn revoked(self: Arc<Self>, _: Vec<(String, i32)>) -> meshbus::kafka::EventFuture {
                Box::pin(async {})
            }
            fn lost(self: Arc<Self>, _: Vec<(String, i32)>) -> meshbus::kafka::EventFuture {
                Box::pin(async {})
            }
        }
        let client = Client::connect(&config).await.unwrap();
        let spec = meshbus::kafka::GroupSpec {
            group: "bench-meshbus-raw".into(),
            topics: vec![TOPIC.into()],
            assignors: vec![meshbus::kafka::Assignor::Range],
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            rebalance_timeout: Duration::from_secs(30),
            start_earliest: true,
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(100),
            instance_id: None,
            protocol: Default::default(),
        };
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let g = client.group_consumer(&spec, Arc::new(Quiet)).await.unwrap();
        let mut got = 0;
        let mut last = std::collections::BTreeMap::new();
        while got < n {
            for r in g.poll(Duration::from_millis(200)).await.unwrap() {
                last.insert((r.topic.clone(), r.partition), r.offset + 1);
                got += 1;
            }
        }
        g.commit(&last).await.unwrap();
        let out = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        g.close().await.unwrap();
        out
    });

    let count = n.to_string();
    let mut peers = Vec::new();
    for (name, peer) in [
        ("librdkafka", broker::Peer::Librdkafka),
        ("java", broker::Peer::Java),
        ("sarama", broker::Peer::Sarama),
    ] {
        let group = format!("bench-{name}");
        let out = b
            .peer_command(
                peer,
                &[
                    "cbench", "--topic", TOPIC, "--group", &group, "--count", &count,
                ],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} cbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = broker::json_lines(&String::from_utf8_lossy(&out.stdout)).remove(0);
        peers.push((
            name,
            r["seconds"].as_f64().unwrap(),
            r["cpu_seconds"].as_f64().unwrap(),
        ));
    }

    println!("\nconsume benchmark: {n} signed anomalies of ~{SIZE} B payload, 3 partitions, TLS+SCRAM-SHA-512, local Apache Kafka");
    println!(
        "{:<52} {:>12} {:>22}",
        "", "records/s", "CPU s per 100k records"
    );
    println!(
        "{:<52} {:>12.0} {:>22}",
        "bare SHA-256 + Ed25519 verify (1 core, in process)", bare, "-"
    );
    println!(
        "{:<52} {:>12.0} {:>22}",
        "meshbus SPEC 4 verifier (1 core, in process)", full, "-"
    );
    println!(
        "{:<52} {:>12.0} {:>22.2}",
        "meshbus consumer: fetch+verify+handle+commit",
        n as f64 / seconds,
        cpu * 100_000.0 / n as f64
    );
    println!(
        "{:<52} {:>12.0} {:>22.2}",
        "meshbus kafka layer, no verification",
        n as f64 / raw_s,
        raw_cpu * 100_000.0 / n as f64
    );
    for (name, secs, cpu) in peers {
        println!(
            "{:<52} {:>12.0} {:>22.2}",
            format!("{name} consumer, no verification"),
            n as f64 / secs,
            cpu * 100_000.0 / n as f64
        );
    }
}
