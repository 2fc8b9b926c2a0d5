//! Produce benchmark against the local broker (Apache Kafka, TLS + SCRAM): meshbus beside
//! librdkafka (confluent-kafka), the Java client and Sarama, on the same kind of topic, same
//! record count and size (1 KiB), unsigned and signed, in one run; all idempotent, acks=all,
//! snappy. Reports records/s and client CPU seconds per 100k records. meshbus's signed run
//! includes signing; the peers send records meshbus pre-signed (they have no signer), so their
//! rows are transport cost only.
//!
//! The same settings for every client: linger 2 ms, 256 KiB batches, 5 produce requests in
//! flight per connection (Sarama: 1, its limit for an idempotent producer), 32 MiB of buffer,
//! keyless records, no cap on sends in flight beyond the buffer; meshbus queues with
//! `Producer::enqueue_raw` and awaits the answers after.
//!
//! `cargo bench --bench produce` (MESHBUS_BENCH_RECORDS, default 20000).

#[path = "../tests/common/broker.rs"]
mod broker;

#[path = "../src/cli/sample.rs"]
mod sample;
use meshbus::contract::Signer;
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const SIZE: usize = 1024;

use broker::cpu_seconds;

struct Row {
    client: &'static str,
    records: usize,
    seconds: f64,
    cpu: f64,
}

/// Queues every record with [`Producer::enqueue_raw`] (no task per record, no cap but the
/// producer's own 32 MiB buffer), then awaits every answer.
async fn run_meshbus(p: &Producer, signer: &Signer, topic: &str, n: usize, signed: bool) -> Row {
    let payload = sample::anomaly_payload(5, 0.5, SIZE);
    let mut pending = Vec::with_capacity(n);
    let (c0, t0) = (cpu_seconds(), Instant::now());
    for i in 0..n {
        let value = if signed {
            signer
                .sign_ai(sample::anomaly(i as u64, SIZE))
                .encode_to_vec()
        } else {
            payload.clone()
        };
        pending.push(
            p.enqueue_raw(topic, None, Some(value), BTreeMap::new())
                .await
                .expect("queued"),
        );
    }
    for d in pending {
        d.await.expect("acknowledged");
    }
    Row {
        client: "meshbus",
        records: n,
        seconds: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - c0,
    }
}

fn run_peer(b: &broker::Broker, peer: broker::Peer, topic: &str, values: &[Vec<u8>]) -> Row {
    let file = b.dir.path().join(format!("{topic}.hex"));
    let text: String = values.iter().map(|v| hex::encode(v) + "\n").collect();
    std::fs::write(&file, text).unwrap();
    let file = file.display().to_string();
    let cmd = if peer == broker::Peer::Librdkafka {
        "bench"
    } else {
        "pbench"
    };
    let out = b
        .peer_command(peer, &[cmd, "--topic", topic, "--file", &file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{peer:?} bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = broker::json_lines(&String::from_utf8_lossy(&out.stdout)).remove(0);
    Row {
        client: match peer {
            broker::Peer::Librdkafka => "librdkafka",
            broker::Peer::Java => "java",
            broker::Peer::Sarama => "sarama",
        },
        records: r["records"].as_u64().unwrap() as usize,
        seconds: r["seconds"].as_f64().unwrap(),
        cpu: r["cpu_seconds"].as_f64().unwrap(),
    }
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do a small smoke run.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let default_n = if bench_mode { 20_000 } else { 300 };
    let n: usize = std::env::var("MESHBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    let topics = [
        "bench.meshbus.unsigned",
        "bench.meshbus.signed",
        "bench.rdkafka.unsigned",
        "bench.rdkafka.signed",
        "bench.java.unsigned",
        "bench.java.signed",
        "bench.sarama.unsigned",
        "bench.sarama.signed",
    ];
    let b = broker::Broker::start(&topics);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signer = Arc::new(Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        1,
    ));
    let mut rows = Vec::new();
    rt.block_on(async {
        let config = b.config();
        let t = Client::connect(&config).await.unwrap();
        let p = Producer::new(t, config, Some(signer.clone()), Metrics::new());
        // warm-up: connections and partition clients
        run_meshbus(&p, &signer, topics[0], 200, false).await;
        rows.push((
            "unsigned",
            run_meshbus(&p, &signer, topics[0], n, false).await,
        ));
        rows.push(("signed", run_meshbus(&p, &signer, topics[1], n, true).await));
    });
    let unsigned: Vec<Vec<u8>> = (0..n)
        .map(|_| sample::anomaly_payload(5, 0.5, SIZE))
        .collect();
    let signed: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            signer
                .sign_ai(sample::anomaly(i as u64, SIZE))
                .encode_to_vec()
        })
        .collect();
    for (i, peer) in [
        broker::Peer::Librdkafka,
        broker::Peer::Java,
        broker::Peer::Sarama,
    ]
    .into_iter()
    .enumerate()
    {
        rows.push(("unsigned", run_peer(&b, peer, topics[2 + 2 * i], &unsigned)));
        rows.push(("signed", run_peer(&b, peer, topics[3 + 2 * i], &signed)));
    }
    println!("\nproduce benchmark: {n} records of ~{SIZE} B, snappy, acks=all, TLS+SCRAM-SHA-512, local Apache Kafka");
    println!(
        "{:<11} {:<9} {:>10} {:>12} {:>22}",
        "client", "records", "seconds", "records/s", "CPU s per 100k records"
    );
    for (kind, r) in rows {
        println!(
            "{:<11} {:<9} {:>10.2} {:>12.0} {:>22.2}",
            r.client,
            kind,
            r.seconds,
            r.records as f64 / r.seconds,
            r.cpu * 100_000.0 / r.records as f64
        );
    }
}
