//! Produce benchmark against the local broker (Apache Kafka, TLS + SCRAM): meshbus beside
//! librdkafka (confluent-kafka), the Java client and Sarama, on the same kind of topic, same
//! record count and size (1 KiB), unsigned and signed, in one run; all idempotent, acks=all,
//! snappy. Reports records/s and client CPU seconds per 100k records. meshbus's signed run
//! includes signing; the peers send records meshbus pre-signed (they have no signer), so their
//! rows are transport cost only.
//!
//! The same settings for every client: linger 2 ms, 1,000,000-byte batches, 5 produce requests
//! in flight per connection (Sarama: 1, its limit for an idempotent producer), 32 MiB of buffer,
//! keyless records, no cap on sends in flight beyond the buffer; meshbus queues with
//! `Producer::enqueue_raw` and awaits the answers after.
//!
//! Every client runs six times, in turn (six rounds; a smoke run makes two). The first round
//! is not compared (the broker still warms in it); each client's figures are the medians of
//! the other five, beside their range, and every round's table is printed too. Signing's cost is compared with a bare signature's in five trials,
//! each a bare-signature loop, a signed run and a pre-signed run back to back; the median
//! trial is quoted.
//!
//! `cargo bench --bench produce` (MESHBUS_BENCH_RECORDS, default 100000, long enough that
//! one broker pause does not decide a row; MESHBUS_BENCH_ONLY=meshbus leaves the peers out,
//! for profiling; MESHBUS_BENCH_ONLY=signing runs the signing trials alone).

#[path = "../tests/common/broker.rs"]
mod broker;

#[path = "../src/cli/sample.rs"]
mod sample;
use meshbus::contract::AnomalyEvent;
use meshbus::contract::Signer;
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const SIZE: usize = 1024;
/// Record sizes of the produce curve.
const SIZES: [usize; 4] = [256, 1024, 64 * 1024, 512 * 1024];

use broker::cpu_seconds;

/// At most this many warm-up runs before the first measured row.
const WARMUPS: usize = 20;
/// The warm-up ends after this many runs in a row in which the broker's JIT compilers used
/// at most JIT_QUIET_SECONDS...
const QUIET_WARMUPS: usize = 3;
/// ...of CPU: two clock ticks, the resolution of `/proc`'s CPU times.
const JIT_QUIET_SECONDS: f64 = 0.02;

/// Rounds of every client in turn in a bench run; all but the first are compared, by their
/// medians. One round against the next moved a row by up to 40% here (Sarama's unsigned rate
/// read 415,225 and then 577,162 records/s), so a lone round decides nothing.
const ROUNDS: usize = 6;

struct Row {
    client: &'static str,
    records: usize,
    seconds: f64,
    cpu: f64,
    /// CPU of the thread that queued the records (for the signed run: signing and queueing).
    caller_cpu: f64,
    broker_cpu: f64,
    /// Of `broker_cpu`, what the broker's JIT compilers used.
    broker_jit: f64,
}

/// What a meshbus run sends.
enum Values {
    /// These values as they are (moved into the producer, no copy).
    Raw(Vec<Vec<u8>>),
    /// These anomalies, signed in the timed loop.
    Sign(Vec<AnomalyEvent>),
}

/// Queues every record with [`Producer::enqueue_raw`] (no task per record, no cap but the
/// producer's own 32 MiB buffer), then awaits every answer.
async fn run_meshbus(
    b: &broker::Broker,
    p: &Producer,
    signer: &Signer,
    topic: &str,
    values: Values,
) -> Row {
    let n = match &values {
        Values::Raw(v) => v.len(),
        Values::Sign(v) => v.len(),
    };
    let mut pending = Vec::with_capacity(n);
    // The topic's leaders before the clock starts, as every peer does.
    p.partitions(topic).await.expect("topic metadata");
    settle(b);
    let (c0, b0, t0) = (cpu_seconds(), b.cpu_seconds(), Instant::now());
    let jit0 = b.jit_cpu_seconds();
    let caller0 = broker::thread_cpu_seconds();
    let values: Box<dyn Iterator<Item = Vec<u8>>> = match values {
        Values::Raw(v) => Box::new(v.into_iter()),
        Values::Sign(v) => Box::new(v.into_iter().map(|m| signer.sign_ai(m).encode_to_vec())),
    };
    for value in values {
        pending.push(
            p.enqueue_raw(topic, None, Some(value), BTreeMap::new())
                .await
                .expect("queued"),
        );
    }
    let caller_cpu = broker::thread_cpu_seconds() - caller0;
    for d in pending {
        d.await.expect("acknowledged");
    }
    Row {
        client: "meshbus",
        records: n,
        seconds: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - c0,
        caller_cpu,
        broker_cpu: b.cpu_seconds() - b0,
        broker_jit: b.jit_cpu_seconds() - jit0,
    }
}

/// Waits for the broker's JIT compilers to go quiet before a row is measured, so no row pays
/// for the compiles the one before it set off (bounded: a broker that never goes quiet is
/// reported, not waited on forever).
fn settle(b: &broker::Broker) {
    if !b.wait_jit_quiet(std::time::Duration::from_secs(30)) {
        eprintln!("produce bench: the broker's JIT compilers were still busy after 30 s");
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
    settle(b);
    let (b0, jit0) = (b.cpu_seconds(), b.jit_cpu_seconds());
    let out = b
        .peer_command(peer, &[cmd, "--topic", topic, "--file", &file])
        .output()
        .unwrap();
    let broker_cpu = b.cpu_seconds() - b0;
    let broker_jit = b.jit_cpu_seconds() - jit0;
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
        caller_cpu: 0.0,
        // Of the peer's whole run, start-up included.
        broker_cpu,
        broker_jit,
    }
}

/// The least, the median (the upper of the middle two, for an even count) and the greatest.
fn spread(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Trials of the signing comparison (a bench run; a smoke run makes one).
const SIGNING_TRIALS: usize = 5;

/// One trial of the signing comparison, its three figures taken back to back.
struct SigningTrial {
    /// Seconds of one bare SHA-256 + Ed25519 signature.
    bare: f64,
    /// meshbus signing and producing.
    signed: Row,
    /// meshbus producing the same kind of records signed beforehand.
    presigned: Row,
}

impl SigningTrial {
    /// Signing's CPU on top of pre-signed produce, over the bare signature's.
    fn ratio(&self) -> f64 {
        (self.signed.cpu - self.presigned.cpu) / self.signed.records as f64 / self.bare
    }
}

/// The bare cost of signing one record, in seconds: SHA-256 of the payload and an Ed25519
/// signature over the SPEC 3a bytes, `reps` times.
fn bare_sign_seconds(reps: usize) -> f64 {
    use ed25519_dalek::Signer as _;
    use sha2::Digest as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let payload = sample::anomaly_payload(5, 0.5, SIZE);
    let t0 = Instant::now();
    for i in 0..reps {
        let hash: [u8; 32] = sha2::Sha256::digest(&payload).into();
        let bytes = meshbus::contract::ai_sign_bytes(
            meshbus::contract::Kind::Anomaly,
            i as i64,
            &key.verifying_key().to_bytes(),
            &[0; 16],
            &hash,
        );
        std::hint::black_box(key.sign(&bytes));
    }
    t0.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: do a small smoke run.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let default_n = if bench_mode { 100_000 } else { 300 };
    let n: usize = std::env::var("MESHBUS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    let topics = [
        "bench.meshbus.unsigned",
        "bench.meshbus.signed",
        "bench.meshbus.signing",
        "bench.warmup",
        "bench.rdkafka.unsigned",
        "bench.rdkafka.signed",
        "bench.java.unsigned",
        "bench.java.signed",
        "bench.sarama.unsigned",
        "bench.sarama.signed",
    ];
    let b = broker::Broker::start(&topics);
    let size_topics: Vec<String> = SIZES.iter().map(|s| format!("bench.size.{s}")).collect();
    b.create_topics(
        3,
        &[],
        &size_topics.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let signer = Arc::new(Signer::new(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        1,
        Default::default(),
    ));
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
    let config = b.config();
    let p = rt.block_on(async {
        let t = Client::connect(&config).await.unwrap();
        Producer::new(t, config.clone(), Some(signer.clone()), Metrics::new())
    });
    let raw =
        |count: usize, size: usize| Values::Raw(vec![sample::anomaly_payload(5, 0.5, size); count]);
    // Warm-up: connections, partition clients and the broker's JIT, before any client is
    // measured. A broker a minute old is still compiling its hot paths (hundreds of methods a
    // second, seen with -XX:+PrintCompilation), and those compiles take CPU from the client
    // measured at the time: one 100k run on a new broker gave its compilers 0.67 of its 1.40
    // broker CPU seconds, and only after ~20 such runs did a run's compiles stay within two
    // clock ticks. So the warm-up repeats (the contract records, as the rows send them) until
    // QUIET_WARMUPS runs in a row cost the compilers at most JIT_QUIET_SECONDS each, or
    // WARMUPS runs were made.
    let mut quiet = 0;
    for warmup in 1..=if bench_mode { WARMUPS } else { 1 } {
        let w = rt.block_on(run_meshbus(
            &b,
            &p,
            &signer,
            "bench.warmup",
            Values::Raw(signed.clone()),
        ));
        println!(
            "warm-up {warmup}: {:.0} records/s, client CPU {:.2} s, broker CPU {:.2} s of which its JIT compilers {:.2} s",
            w.records as f64 / w.seconds,
            w.cpu,
            w.broker_cpu,
            w.broker_jit
        );
        quiet = if w.broker_jit <= JIT_QUIET_SECONDS {
            quiet + 1
        } else {
            0
        };
        if quiet == QUIET_WARMUPS {
            break;
        }
    }
    // ROUNDS rounds of every client in turn, all but the first compared: the warm-up above is
    // meshbus's, and the broker still warms during the first round, to the benefit of whichever
    // client comes later in it (meshbus's first row ran at half its later rate in some runs).
    // MESHBUS_BENCH_ONLY=meshbus leaves the peers out (for profiling meshbus alone).
    // MESHBUS_BENCH_ONLY=signing runs meshbus's signed row alone (for profiling it).
    let only = std::env::var("MESHBUS_BENCH_ONLY").unwrap_or_default();
    let peers = only != "meshbus" && only != "signing";
    let mut rounds: Vec<Vec<(&str, Row)>> = Vec::new();
    let round_count = match (only.as_str(), bench_mode) {
        ("signing", _) => 0,
        (_, true) => ROUNDS,
        (_, false) => 2,
    };
    for _ in 0..round_count {
        let mut rows = vec![
            (
                "unsigned",
                rt.block_on(run_meshbus(&b, &p, &signer, topics[0], raw(n, SIZE))),
            ),
            (
                "pre-signed",
                rt.block_on(run_meshbus(
                    &b,
                    &p,
                    &signer,
                    topics[1],
                    Values::Raw(signed.clone()),
                )),
            ),
        ];
        for (i, peer) in [
            broker::Peer::Librdkafka,
            broker::Peer::Java,
            broker::Peer::Sarama,
        ]
        .into_iter()
        .enumerate()
        .filter(|_| peers)
        {
            rows.push(("unsigned", run_peer(&b, peer, topics[4 + 2 * i], &unsigned)));
            rows.push(("pre-signed", run_peer(&b, peer, topics[5 + 2 * i], &signed)));
        }
        rounds.push(rows);
    }
    // Signing against a bare signature, in SIGNING_TRIALS trials: each a bare-signature loop,
    // the signed run and a pre-signed run, back to back, so one trial's three figures share
    // the machine's state. A lone pair of runs could not show a 10% difference here: the same
    // bare-signature loop read 17.0 us in one run and 25.0 us in the next on an idle machine.
    // The trial with the median ratio is quoted; every trial is printed.
    let reps = n.max(1000);
    let trials = if bench_mode { SIGNING_TRIALS } else { 1 };
    let mut signing_trials: Vec<SigningTrial> = (0..trials)
        .map(|_| {
            // The broker's compilers quiet first: the last run may have set off compiles.
            settle(&b);
            let bare = bare_sign_seconds(reps);
            let anomalies = (0..n).map(|i| sample::anomaly(i as u64, SIZE)).collect();
            let signed_run = rt.block_on(run_meshbus(
                &b,
                &p,
                &signer,
                topics[2],
                Values::Sign(anomalies),
            ));
            let presigned = rt.block_on(run_meshbus(
                &b,
                &p,
                &signer,
                topics[1],
                Values::Raw(signed.clone()),
            ));
            SigningTrial {
                bare,
                signed: signed_run,
                presigned,
            }
        })
        .collect();
    signing_trials.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    // CPU seconds over the run's records, in microseconds a record.
    let us = |x: f64| x * 1e6 / n as f64;
    let trial_line = |t: &SigningTrial| {
        println!(
            "signing trial: bare signature {:.1} us; signed run {:.0} records/s at {:.1} us of client CPU a record (queueing thread {:.1}); pre-signed run {:.1} us; signing {:.1} us, {:.2}x bare",
            t.bare * 1e6,
            n as f64 / t.signed.seconds,
            us(t.signed.cpu),
            us(t.signed.caller_cpu),
            us(t.presigned.cpu),
            us(t.signed.cpu - t.presigned.cpu),
            t.ratio()
        )
    };
    if only == "signing" {
        signing_trials.iter().for_each(trial_line);
        return;
    }
    // Produce against record size: the same bytes per size, at least 200 records.
    let mut by_size = Vec::new();
    for size in SIZES {
        let count = (n * SIZE / size).clamp(200.min(n), n);
        let topic = format!("bench.size.{size}");
        by_size.push((
            size,
            rt.block_on(run_meshbus(&b, &p, &signer, &topic, raw(count, size))),
        ));
    }
    // meshbus's signer alone, in the same conditions as the bare loop (no transport beside
    // it): what the signed run's queueing thread does per record, less the queueing.
    let alone: Vec<AnomalyEvent> = (0..reps).map(|i| sample::anomaly(i as u64, SIZE)).collect();
    let t0 = Instant::now();
    for m in alone {
        std::hint::black_box(signer.sign_ai(m).encode_to_vec());
    }
    let signer_alone = t0.elapsed().as_secs_f64() / reps as f64;

    println!("\nproduce benchmark: {n} records of ~{SIZE} B, snappy, acks=all, idempotent, TLS + SCRAM-SHA-512, local Apache Kafka (3 partitions); every client: linger 2 ms, 1,000,000-byte batches, 5 requests in flight per connection (Sarama 1), 32 MiB buffer");
    let per_100k = |x: f64, r: &Row| x * 100_000.0 / r.records as f64;
    let line = |kind: &str, r: &Row| {
        println!(
            "| {} | {kind} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            r.client,
            r.seconds,
            r.records as f64 / r.seconds,
            per_100k(r.cpu, r),
            per_100k(r.broker_cpu, r),
            per_100k(r.broker_jit, r)
        )
    };
    for (round, rows) in rounds.iter().enumerate() {
        let which = if round == 0 { " (not compared)" } else { "" };
        println!("\nround {} of {round_count}{which}", round + 1);
        println!("\n| client | records | seconds | records/s | client CPU s per 100k | broker CPU s per 100k | of which its JIT compilers |\n|---|---|---:|---:|---:|---:|---:|");
        for (kind, r) in rows {
            line(kind, r);
        }
    }
    // Each client's median over the compared rounds, records/s and CPU each on its own.
    if let Some(compared) = rounds.get(1..).filter(|c| !c.is_empty()) {
        println!(
            "\nmedians of rounds 2-{round_count} (compared; the range beside)\n\n| client | records | records/s | client CPU s per 100k |\n|---|---|---:|---:|"
        );
        for (i, (kind, first)) in compared[0].iter().enumerate() {
            let rates = spread(compared.iter().map(|rows| {
                let r = &rows[i].1;
                r.records as f64 / r.seconds
            }));
            let cpus = spread(
                compared
                    .iter()
                    .map(|rows| per_100k(rows[i].1.cpu, &rows[i].1)),
            );
            println!(
                "| {} | {kind} | {:.0} ({:.0}-{:.0}) | {:.2} ({:.2}-{:.2}) |",
                first.client, rates.1, rates.0, rates.2, cpus.1, cpus.0, cpus.2
            );
        }
    }
    let median = &signing_trials[signing_trials.len() / 2];
    println!(
        "\nsigning ({} trials in the run; the median trial's rows)\n\n| client | records | seconds | records/s | client CPU s per 100k | broker CPU s per 100k | of which its JIT compilers |\n|---|---|---:|---:|---:|---:|---:|",
        signing_trials.len()
    );
    line("signing included", &median.signed);
    line("pre-signed", &median.presigned);
    // Where the signed run's extra CPU went: the thread that signs and queues, and the rest
    // of the process (the send engine and the connection).
    println!(
        "\nwhere the CPU went, us per record: queueing thread {:.1} signed / {:.1} pre-signed; send engine and connection {:.1} signed / {:.1} pre-signed",
        us(median.signed.caller_cpu),
        us(median.presigned.caller_cpu),
        us(median.signed.cpu - median.signed.caller_cpu),
        us(median.presigned.cpu - median.presigned.caller_cpu)
    );
    println!(
        "meshbus signer alone (sign_ai and encode, no transport beside it): {:.1} us per record",
        signer_alone * 1e6
    );
    println!();
    signing_trials.iter().for_each(trial_line);
    println!(
        "\nsigning on top of pre-signed produce (median of {} trials): {:.1} us of CPU per record; bare SHA-256 + Ed25519 sign: {:.1} us ({:.2}x; trials {:.2}x-{:.2}x)",
        signing_trials.len(),
        us(median.signed.cpu - median.presigned.cpu),
        median.bare * 1e6,
        median.ratio(),
        signing_trials[0].ratio(),
        signing_trials[signing_trials.len() - 1].ratio()
    );
    println!("\n| record size (meshbus, unsigned) | records | records/s | MiB/s | client CPU s per 100k |\n|---|---:|---:|---:|---:|");
    for (size, r) in &by_size {
        println!(
            "| {size} B | {} | {:.0} | {:.1} | {:.2} |",
            r.records,
            r.records as f64 / r.seconds,
            r.records as f64 * *size as f64 / r.seconds / (1024.0 * 1024.0),
            per_100k(r.cpu, r)
        );
    }
}
