//! Consume benchmark against the local broker (Apache Kafka, TLS + SCRAM-SHA-512), in one run,
//! every client on the same records (signed anomalies) and the same topic:
//! - in process, one core: the bare crypto (SHA-256 + Ed25519 verify on a decoded record) and
//!   the full SPEC 4 verifier;
//! - verified consume, each in a fresh group from the beginning, committing: the meshbus
//!   consumer (fetch + verify + handler + commit) on 1 and 2 runtime threads; Sarama with Go's
//!   `crypto/ed25519` (the deployed validators' path, `tests/go/peer/verify.go`) on
//!   GOMAXPROCS 1 and 2; confluent-kafka with Python's `cryptography`
//!   (`tests/py/anomaly_verify.py`);
//! - the Kafka layer alone, no verification: meshbus's `kafka::GroupConsumer`, librdkafka,
//!   the Java client and Sarama;
//! - scaling: meshbus's verified consume against partitions (1, 8, 64, 256) and record size
//!   (256 B, 1 KiB, 64 KiB, 512 KiB);
//! - memory: the peak RSS of the static `meshbus consume` holding 256 partitions at full speed,
//!   and the RSS of an idle one.
//!
//! The consumer's CPU is compared with its parts' (Kafka layer + verifier) in three trials,
//! each taking every figure of the comparison back to back; the median trial gives the rows.
//!
//! Each row gives records/s, the client's CPU seconds per 100k records and the broker's CPU
//! seconds per 100k records during the same run.
//!
//! `cargo bench --bench consume` (MESHBUS_BENCH_RECORDS, default 50000; the static binary is
//! MESHBUS_STATIC_BIN or target/x86_64-unknown-linux-musl/static/meshbus;
//! MESHBUS_BENCH_ONLY=layer runs the Kafka layer's row alone, five times, and
//! MESHBUS_BENCH_ONLY=verified the one-thread verified row, three times, for profiling;
//! MESHBUS_BENCH_PHASES=1 prints when the layer's rows joined, read and committed).

#[path = "../tests/common/broker.rs"]
mod broker;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use meshbus::consumer::{Consumed, Consumer};
#[path = "../src/cli/sample.rs"]
mod sample;
use meshbus::config::Config;
use meshbus::contract::{Kind, Signer, TrustStore, Verifier, VerifierConfig};
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::cpu_seconds;

/// The main table's topic: 1 KiB anomalies on 8 partitions.
const TOPIC: &str = "bench.consume";
const PARTITIONS: u32 = 8;

/// One measured run.
struct Measure {
    records: usize,
    seconds: f64,
    cpu: f64,
    broker_cpu: f64,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn cpu_per_100k(&self) -> f64 {
        self.cpu * 100_000.0 / self.records as f64
    }
    fn broker_per_100k(&self) -> f64 {
        self.broker_cpu * 100_000.0 / self.records as f64
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

fn signed(signer: &Signer, n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            signer
                .sign_ai(sample::anomaly(i as u64, size))
                .encode_to_vec()
        })
        .collect()
}

/// Writes `records` to `topic` (meshbus, queued and then awaited).
fn fill(config: &Config, topic: &str, records: &[Vec<u8>]) {
    runtime(2).block_on(async {
        let t = Client::connect(config).await.unwrap();
        let p = Producer::new(t, config.clone(), None, Metrics::new());
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            pending.push(
                p.enqueue_raw(topic, None, Some(r.clone()), Default::default())
                    .await
                    .unwrap(),
            );
        }
        for d in pending {
            d.await.unwrap();
        }
        p.close().await.unwrap();
    });
}

/// The meshbus consumer on `threads` runtime threads: from `run` until every record was
/// handled and its offset committed.
fn meshbus_verified(
    b: &broker::Broker,
    config: &Config,
    topic: &str,
    n: usize,
    threads: usize,
    group: &str,
) -> Measure {
    let mut config = config.clone();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.consumer.commit_interval = Duration::from_millis(100);
    runtime(threads).block_on(async {
        let t = Client::connect(&config).await.unwrap();
        let p = Producer::new(t.clone(), config.clone(), None, Metrics::new());
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let verifier = Verifier::new(VerifierConfig::default(), TrustStore::from_keys([]));
        let consumer = Consumer::new(
            t,
            config.clone(),
            Arc::new(verifier),
            Arc::new(p),
            Metrics::new(),
            group,
        )
        .unwrap()
        .handle(Kind::Anomaly, move |_r: Consumed| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        });
        let offsets = consumer.offsets();
        let (c0, b0, t0) = (cpu_seconds(), b.cpu_seconds(), Instant::now());
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
        let m = Measure {
            records: n,
            seconds: t0.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - c0,
            broker_cpu: b.cpu_seconds() - b0,
        };
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        m
    })
}

/// meshbus's Kafka layer alone in group `group`: the group consumer's polls, one commit at the
/// end.
fn meshbus_layer(
    b: &broker::Broker,
    config: &Config,
    topic: &str,
    n: usize,
    group: &str,
) -> Measure {
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
    runtime(2).block_on(async {
        let client = Client::connect(config).await.unwrap();
        let spec = meshbus::kafka::GroupSpec {
            group: group.into(),
            topics: vec![topic.into()],
            assignors: vec![meshbus::config::Assignor::Range],
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            rebalance_timeout: Duration::from_secs(30),
            start_earliest: true,
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(100),
            instance_id: None,
            protocol: Default::default(),
        };
        let (c0, b0, t0) = (cpu_seconds(), b.cpu_seconds(), Instant::now());
        let g = client.group_consumer(&spec, Arc::new(Quiet)).await.unwrap();
        let joined = t0.elapsed();
        let mut first = None;
        let (mut got, mut polls) = (0, 0u32);
        let mut last = std::collections::BTreeMap::new();
        while got < n {
            polls += 1;
            for r in g.poll(Duration::from_millis(200)).await.unwrap() {
                last.insert((r.topic.clone(), r.partition), r.offset + 1);
                got += 1;
            }
            if got > 0 && first.is_none() {
                first = Some(t0.elapsed());
            }
        }
        let read = t0.elapsed();
        g.commit(&last).await.unwrap();
        if std::env::var_os("MESHBUS_BENCH_PHASES").is_some() {
            eprintln!(
                "  phases: group_consumer {joined:?}, first records {first:?}, all read {read:?}, \
                 committed {:?}, {polls} polls",
                t0.elapsed()
            );
        }
        let m = Measure {
            records: n,
            seconds: t0.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - c0,
            broker_cpu: b.cpu_seconds() - b0,
        };
        g.close().await.unwrap();
        m
    })
}

/// A peer's `cbench` (no verification) or `vbench` (SPEC 4 verification) in a fresh group.
fn peer(
    b: &broker::Broker,
    peer: broker::Peer,
    cmd: &str,
    topic: &str,
    n: usize,
    group: &str,
    env: &[(&str, &str)],
) -> Measure {
    let count = n.to_string();
    let b0 = b.cpu_seconds();
    let out = b
        .peer_command(
            peer,
            &[cmd, "--topic", topic, "--group", group, "--count", &count],
        )
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let broker_used = b.cpu_seconds() - b0;
    assert!(
        out.status.success(),
        "{peer:?} {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = broker::json_lines(&String::from_utf8_lossy(&out.stdout)).remove(0);
    if cmd == "vbench" {
        assert_eq!(
            r["verified"].as_u64(),
            Some(n as u64),
            "{peer:?} verified every record: {r}"
        );
    }
    Measure {
        records: r["records"].as_u64().unwrap() as usize,
        seconds: r["seconds"].as_f64().unwrap(),
        cpu: r["cpu_seconds"].as_f64().unwrap(),
        // The peer's run includes its start-up; the broker's share is of the whole process.
        broker_cpu: broker_used,
    }
}

/// The static binary's peak and idle RSS (KiB): `meshbus consume` over `topic` until it has
/// consumed `n` records, then an idle consumer on an empty topic.
fn static_rss(b: &broker::Broker, topic: &str, n: usize, empty_topic: &str) -> (u64, u64) {
    let bin = std::env::var("MESHBUS_STATIC_BIN").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/x86_64-unknown-linux-musl/static/meshbus"
        )
        .into()
    });
    assert!(
        std::path::Path::new(&bin).exists(),
        "the static binary {bin} is missing: run scripts/static-build first"
    );
    let status_kib = |pid: u32, field: &str| -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = s.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let run = |topic: &str, group: &str, max: Option<usize>| {
        let mut c = std::process::Command::new(&bin);
        c.args(["consume", "--kind", "anomaly", "--group", group]);
        if let Some(max) = max {
            c.args(["--max", &max.to_string()]);
        }
        c.envs(b.env())
            .env("KAFKA_TOPIC_ANOMALY", topic)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().unwrap()
    };
    // Full speed: the peak while it reads every record.
    let mut child = run(topic, "bench-rss-full", Some(n));
    let started = Instant::now();
    let mut peak = 0;
    loop {
        if let Some(hwm) = status_kib(child.id(), "VmHWM:") {
            peak = peak.max(hwm);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "meshbus consume did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Idle: joined, assigned and waiting on an empty topic.
    let mut child = run(empty_topic, "bench-rss-idle", None);
    std::thread::sleep(Duration::from_secs(8));
    let idle = status_kib(child.id(), "VmRSS:").expect("idle consumer running");
    child.kill().unwrap();
    child.wait().unwrap();
    (peak, idle)
}

fn row(name: &str, m: &Measure) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} |",
        m.rate(),
        m.cpu_per_100k(),
        m.broker_per_100k()
    );
}

/// Trials of the consumer-against-its-parts comparison (a bench run; a smoke run makes one).
const TRIALS: usize = 3;

/// In process, one core, on the same records: the bare crypto's rate (SHA-256 + Ed25519
/// verify on a decoded record) and the full SPEC 4 verifier's, in records/s.
fn in_process_rates(signer: &Signer, records: &[Vec<u8>]) -> (f64, f64) {
    let n = records.len() as f64;
    let key = VerifyingKey::from_bytes(&signer.public_key()).unwrap();
    let t0 = Instant::now();
    for r in records {
        let m = meshbus::contract::AnomalyEvent::decode(r.as_slice()).unwrap();
        let digest = Sha256::digest(&m.payload);
        let bytes = meshbus::contract::ai_message_sign_bytes(&m);
        let sig = Signature::from_slice(&m.signature).unwrap();
        assert!(key.verify(&bytes, &sig).is_ok() && digest.as_slice() == m.content_hash);
    }
    let bare = n / t0.elapsed().as_secs_f64();
    let verifier = Verifier::new(VerifierConfig::default(), TrustStore::from_keys([]));
    // Shared bytes, as the consumer's fetched records are: verified without a copy.
    let shared: Vec<bytes::Bytes> = records.iter().map(|r| r.clone().into()).collect();
    let t0 = Instant::now();
    for r in &shared {
        verifier.verify(Kind::Anomaly, r).unwrap();
    }
    (bare, n / t0.elapsed().as_secs_f64())
}

/// One trial of the consumer against its parts, its figures taken back to back so they share
/// the machine's state.
struct Trial {
    /// Bare crypto, records/s in process.
    bare: f64,
    /// The SPEC 4 verifier, records/s in process.
    verifier: f64,
    /// The Kafka layer, no verification.
    layer: Measure,
    /// The verified consumer on one runtime thread, and on two.
    verified: [Measure; 2],
}

impl Trial {
    /// Kafka layer + verifier, CPU s per 100k.
    fn parts(&self) -> f64 {
        self.layer.cpu_per_100k() + 1e5 / self.verifier
    }

    /// The verified consumer's CPU over its parts', on `threads` runtime threads.
    fn ratio(&self, threads: usize) -> f64 {
        self.verified[threads - 1].cpu_per_100k() / self.parts()
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MESHBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 50_000 } else { 300 });
    let b = broker::Broker::start(&[]);
    let scale_partitions = [1u32, 8, 64, 256];
    let scale_sizes = [(256usize, "256 B"), (1024, "1 KiB"), (64 * 1024, "64 KiB")];
    b.create_topics(PARTITIONS, &[], &[TOPIC, "bench.empty"]);
    for p in scale_partitions {
        b.create_topics(p, &[], &[&format!("bench.parts.{p}")]);
    }
    for (size, _) in scale_sizes {
        b.create_topics(PARTITIONS, &[], &[&format!("bench.size.{size}")]);
    }
    b.create_topics(
        PARTITIONS,
        &["max.message.bytes=2097152"],
        &["bench.size.524288"],
    );
    let signer = Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        1,
        Default::default(),
    );
    let config = b.config();
    let records = signed(&signer, n, 1024);

    fill(&config, TOPIC, &records);
    // Untimed: the first group of a fresh broker creates and loads `__consumer_offsets`, and
    // the broker's fetch path is still interpreted by its JVM. Whichever row ran first paid
    // for both (the broker's CPU per record on that row was four times the others').
    meshbus_layer(&b, &config, TOPIC, n, "bench-broker-warmup");
    if std::env::var("MESHBUS_BENCH_ONLY").as_deref() == Ok("layer") {
        // For profiling meshbus's Kafka layer alone: five rows of it, nothing else.
        for i in 0..5 {
            row(
                "meshbus kafka::GroupConsumer",
                &meshbus_layer(&b, &config, TOPIC, n, &format!("bench-layer-{i}")),
            );
        }
        return;
    }
    if std::env::var("MESHBUS_BENCH_ONLY").as_deref() == Ok("verified") {
        // For profiling meshbus's verified consumer alone: three one-thread rows, each after
        // the in-process verifier on the same records, to set them side by side.
        for i in 0..3 {
            let (bare, verifier) = in_process_rates(&signer, &records);
            println!(
                "in process: bare crypto {:.2}, SPEC 4 verifier {:.2} CPU s per 100k",
                1e5 / bare,
                1e5 / verifier
            );
            row(
                "meshbus consumer, 1 thread",
                &meshbus_verified(&b, &config, TOPIC, n, 1, &format!("bench-verified-{i}")),
            );
        }
        return;
    }
    // The consumer against its parts, in TRIALS trials: a lone run of each could not show a 5%
    // difference here (the same in-process loop reads up to 40% slow in some runs on an idle
    // machine). The trial with the median one-thread ratio gives the table's rows; every
    // trial is printed.
    let count = if bench_mode { TRIALS } else { 1 };
    let mut trials: Vec<Trial> = (0..count)
        .map(|i| {
            let (bare, verifier) = in_process_rates(&signer, &records);
            let layer = meshbus_layer(&b, &config, TOPIC, n, &format!("bench-meshbus-raw-{i}"));
            let verified = [1, 2].map(|threads| {
                let group = format!("bench-meshbus-{threads}-{i}");
                meshbus_verified(&b, &config, TOPIC, n, threads, &group)
            });
            Trial {
                bare,
                verifier,
                layer,
                verified,
            }
        })
        .collect();
    let ratios_2: Vec<f64> = {
        let mut r: Vec<f64> = trials.iter().map(|t| t.ratio(2)).collect();
        r.sort_by(f64::total_cmp);
        r
    };
    trials.sort_by(|a, b| a.ratio(1).total_cmp(&b.ratio(1)));
    let median = &trials[trials.len() / 2];
    let (bare, full) = (median.bare, median.verifier);
    let [verified_1, verified_2] = &median.verified;
    let layer = &median.layer;
    let go_1 = peer(
        &b,
        broker::Peer::Sarama,
        "vbench",
        TOPIC,
        n,
        "bench-go-1",
        &[("GOMAXPROCS", "1")],
    );
    let go_2 = peer(
        &b,
        broker::Peer::Sarama,
        "vbench",
        TOPIC,
        n,
        "bench-go-2",
        &[("GOMAXPROCS", "2")],
    );
    let py = peer(
        &b,
        broker::Peer::Librdkafka,
        "vbench",
        TOPIC,
        n,
        "bench-py",
        &[],
    );
    let mut unverified = Vec::new();
    for (name, p) in [
        ("librdkafka", broker::Peer::Librdkafka),
        ("Java", broker::Peer::Java),
        ("Sarama", broker::Peer::Sarama),
    ] {
        let group = format!("bench-{name}");
        unverified.push((name, peer(&b, p, "cbench", TOPIC, n, &group, &[])));
    }

    // Scaling: partitions at 1 KiB, then record sizes on 8 partitions.
    let mut by_partitions = Vec::new();
    for p in scale_partitions {
        let topic = format!("bench.parts.{p}");
        fill(&config, &topic, &records);
        let group = format!("bench-parts-{p}");
        by_partitions.push((p, meshbus_verified(&b, &config, &topic, n, 2, &group)));
    }
    let mut by_size = Vec::new();
    for (size, label) in scale_sizes.into_iter().chain([(512 * 1024, "512 KiB")]) {
        // The same bytes for every size, at least 200 records.
        let count = (n * 1024 / size).clamp(200.min(n), n);
        let topic = format!("bench.size.{size}");
        fill(&config, &topic, &signed(&signer, count, size));
        let group = format!("bench-size-{size}");
        by_size.push((
            label,
            meshbus_verified(&b, &config, &topic, count, 2, &group),
        ));
    }
    let rss_topic = "bench.parts.256";
    let (peak_kib, idle_kib) = static_rss(&b, rss_topic, n, "bench.empty");

    println!(
        "\nconsume benchmark: {n} signed anomalies with 1 KiB payloads on {PARTITIONS} partitions, TLS + SCRAM-SHA-512, snappy, local Apache Kafka"
    );
    println!("\n| one core, in process | records/s | CPU s per 100k |\n|---|---:|---:|");
    println!(
        "| bare SHA-256 + Ed25519 verify | {bare:.0} | ({:.2}) |",
        1e5 / bare
    );
    println!(
        "| meshbus SPEC 4 verifier | {full:.0} ({:.2} of bare) | ({:.2}) |",
        full / bare,
        1e5 / full
    );
    println!("\n| verified consume | records/s | client CPU s per 100k | broker CPU s per 100k |\n|---|---:|---:|---:|");
    row("meshbus consumer, 1 thread", verified_1);
    row("meshbus consumer, 2 threads", verified_2);
    row("Sarama + Go crypto/ed25519, GOMAXPROCS=1", &go_1);
    row("Sarama + Go crypto/ed25519, GOMAXPROCS=2", &go_2);
    row("confluent-kafka + Python cryptography", &py);
    println!("\n| Kafka layer, no verification | records/s | client CPU s per 100k | broker CPU s per 100k |\n|---|---:|---:|---:|");
    row("meshbus kafka::GroupConsumer", layer);
    for (name, m) in &unverified {
        row(name, m);
    }
    println!(
        "\nthe consumer against its parts, {} trials (bare crypto and verifier in process, then the Kafka layer and the verified consumer on 1 and 2 threads, back to back):",
        trials.len()
    );
    for t in &trials {
        println!(
            "trial: bare {:.0} records/s, verifier {:.0} ({:.2} of bare); Kafka layer {:.2} + verifier {:.2} = {:.2} CPU s per 100k; consumer {:.2} (1 thread) / {:.2} (2 threads); ratio {:.2} / {:.2}",
            t.bare,
            t.verifier,
            t.verifier / t.bare,
            t.layer.cpu_per_100k(),
            1e5 / t.verifier,
            t.parts(),
            t.verified[0].cpu_per_100k(),
            t.verified[1].cpu_per_100k(),
            t.ratio(1),
            t.ratio(2)
        );
    }
    println!(
        "\nmeshbus consumer CPU per 100k (median trial): {:.2} (1 thread), {:.2} (2 threads); Kafka layer + verifier: {:.2}; ratio {:.2} (1 thread, trials {:.2}-{:.2}) / {:.2} (2 threads, median of its own, trials {:.2}-{:.2})",
        verified_1.cpu_per_100k(),
        verified_2.cpu_per_100k(),
        median.parts(),
        median.ratio(1),
        trials[0].ratio(1),
        trials[trials.len() - 1].ratio(1),
        ratios_2[ratios_2.len() / 2],
        ratios_2[0],
        ratios_2[ratios_2.len() - 1]
    );
    println!("\n| partitions (1 KiB, 2 threads) | records/s | client CPU s per 100k | broker CPU s per 100k |\n|---|---:|---:|---:|");
    for (p, m) in &by_partitions {
        row(&p.to_string(), m);
    }
    println!("\n| payload size (8 partitions, 2 threads) | records | records/s | MiB/s | client CPU s per 100k |\n|---|---:|---:|---:|---:|");
    for ((label, m), size) in by_size.iter().zip([256usize, 1024, 64 * 1024, 512 * 1024]) {
        println!(
            "| {label} | {} | {:.0} | {:.1} | {:.2} |",
            m.records,
            m.rate(),
            m.rate() * size as f64 / (1024.0 * 1024.0),
            m.cpu_per_100k()
        );
    }
    println!(
        "\nstatic meshbus consume RSS: {:.1} MiB peak over {rss_topic} (256 partitions, {n} records), {:.1} MiB idle",
        peak_kib as f64 / 1024.0,
        idle_kib as f64 / 1024.0
    );
}
