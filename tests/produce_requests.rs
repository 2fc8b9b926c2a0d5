//! How the producer groups batches into Produce requests (vendored krafka, change 19): a batch
//! still lingering rides in a request its broker gets anyway, as Java's `RecordAccumulator.drain`
//! takes the first batch of every partition on a ready node, instead of going a linger later in
//! a request of its own. And (change 20) a task queueing in a loop still yields to the
//! runtime, though a send that finds room in the buffer awaits nothing. And (change 21) a
//! steady sender does not wake the send engine once a record while a batch is in flight.
//!
//! No Kafka broker is needed: the peer is the fake broker (`common/fake_broker.rs`), which reads
//! each Produce request's partitions and record counts and answers every partition with success.

mod common;
use common::fake_broker::{s, serve, standard, Reply, Request, PRODUCE};
use meshbus::config::{Compression, Config};
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "riders";
/// Partition 0 of two (murmur2, as Java places keys; the test checks it on the wire).
const FULL_KEY: &[u8] = b"a";
/// Partition 1 of two.
const LINGERING_KEY: &[u8] = b"lingering";
/// Records of 50,000 bytes: 19 fill meshbus's 1,000,000-byte batch, so few sends fill one
/// well within the 2 ms linger.
const FILL_VALUE: usize = 50_000;
const FILL_RECORDS: usize = 30;
/// Fewer records than this in partition 0's first batch: it lingered out before it filled.
const FULL_BATCH_RECORDS: i32 = 15;
/// Attempts at most, and the conclusive ones that end the test early.
const ATTEMPTS: usize = 100;
const ENOUGH: usize = 5;
/// More than tokio's coop budget (128) of sends: a task queueing this many in a loop has
/// yielded at least once.
const SENDS_WITHOUT_A_YIELD: usize = 1_000;

/// The producer's linger (meshbus's `PRODUCER_LINGER`).
const LINGER: Duration = Duration::from_millis(2);
/// How long the fake broker holds each Produce answer: a batch stays in flight that long.
const HOLD: Duration = Duration::from_millis(50);
/// Records a steady sender queues, one every SPACING: many a linger.
const STEADY_RECORDS: usize = 2_000;
const SPACING: Duration = Duration::from_micros(50);
/// Fewer records a linger than this and the attempt cannot tell one wake a record from one
/// a linger (a loaded machine slowed the sender): it is not counted.
const RECORDS_A_LINGER_TO_TELL: f64 = 4.0;
/// Conclusive attempts that end the steady-sender test early.
const STEADY_ENOUGH: usize = 2;

/// One Produce request as the broker saw it: (partition, records) per partition.
type Sent = Vec<(i32, i32)>;

/// A Produce v3 request body's partitions of `TOPIC` with the record count of each batch.
fn parse_produce(body: &[u8]) -> Sent {
    let mut at = 0;
    let mut take = |n: usize| {
        let out = &body[at..at + n];
        at += n;
        out
    };
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let i32_at = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let txn = i16_at(take(2));
    if txn > 0 {
        take(txn as usize);
    }
    take(2 + 4); // acks, timeout
    let mut sent = Vec::new();
    for _ in 0..i32_at(take(4)) {
        let name_len = i16_at(take(2)) as usize;
        let name = take(name_len).to_vec();
        assert_eq!(name, TOPIC.as_bytes());
        for _ in 0..i32_at(take(4)) {
            let partition = i32_at(take(4));
            let len = i32_at(take(4)) as usize;
            let batch = take(len);
            // Record batch v2: the record count is the int32 at byte 57.
            sent.push((partition, i32_at(&batch[57..61])));
        }
    }
    sent
}

/// A Produce v3 answer: every partition of `sent` stored, at offset 0.
fn produce_answer(sent: &Sent) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(1i32.to_be_bytes());
    s(&mut b, TOPIC);
    b.extend((sent.len() as i32).to_be_bytes());
    for (partition, _) in sent {
        b.extend(partition.to_be_bytes());
        b.extend(0i16.to_be_bytes());
        b.extend(0i64.to_be_bytes()); // base offset
        b.extend((-1i64).to_be_bytes()); // log append time
    }
    b.extend(0i32.to_be_bytes()); // throttle
    b
}

/// A fake broker that logs each Produce request's partitions in `log` and answers every
/// partition with success, after `hold`; returns its port.
async fn fake_broker(log: Arc<Mutex<Vec<Sent>>>, hold: Duration) -> u16 {
    serve(Arc::new(move |req: &Request, port| {
        if let Some(reply) = standard(req, port, &[(TOPIC, 2)]) {
            return reply;
        }
        if req.api_key != PRODUCE {
            return Reply::Silence;
        }
        let sent = parse_produce(&req.body);
        let answer = produce_answer(&sent);
        log.lock().unwrap().push(sent);
        std::thread::sleep(hold);
        Reply::Body(answer)
    }))
    .await
}

/// A producer on a fake broker that logs each Produce request's partitions in `log` and
/// answers every partition with success at once.
async fn producer_on_fake_broker(log: Arc<Mutex<Vec<Sent>>>) -> Producer {
    producer_on(fake_broker(log, Duration::ZERO).await).await
}

/// A producer on the fake broker at `port`.
async fn producer_on(port: u16) -> Producer {
    let mut config = Config::builder()
        .brokers([format!("127.0.0.1:{port}")])
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The fake broker speaks neither InitProducerId nor snappy's framing checks: plain batches.
    config.producer.idempotent = false;
    config.producer.compression = Compression::None;
    let client = Client::connect(&config).await.unwrap();
    Producer::new(client, config, None, Metrics::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_batch_rides_in_the_request_that_sends_a_full_batch_to_its_broker() {
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let p = producer_on_fake_broker(log.clone()).await;

    // Each attempt: one small record for partition 1 (it lingers 2 ms), then enough for
    // partition 0 to fill a batch, which is sent at once. Partition 1's record must go in the
    // same request. An attempt where partition 1's linger ran out first (a loaded machine) says
    // nothing and is not counted.
    let mut conclusive = 0;
    for _ in 0..ATTEMPTS {
        if conclusive == ENOUGH {
            break;
        }
        let start = log.lock().unwrap().len();
        let mut pending = vec![p
            .enqueue_raw(
                TOPIC,
                Some(LINGERING_KEY.to_vec()),
                Some(vec![1; 100]),
                BTreeMap::new(),
            )
            .await
            .unwrap()];
        for _ in 0..FILL_RECORDS {
            pending.push(
                p.enqueue_raw(
                    TOPIC,
                    Some(FULL_KEY.to_vec()),
                    Some(vec![0; FILL_VALUE]),
                    BTreeMap::new(),
                )
                .await
                .unwrap(),
            );
        }
        for d in pending {
            d.await.unwrap();
        }
        let requests = log.lock().unwrap()[start..].to_vec();
        let first_of = |partition: i32| {
            requests
                .iter()
                .position(|r| r.iter().any(|(p, _)| *p == partition))
                .unwrap_or_else(|| panic!("no request for partition {partition}: {requests:?}"))
        };
        let (full_at, lingering_at) = (first_of(0), first_of(1));
        let full_records = requests[full_at]
            .iter()
            .find(|(p, _)| *p == 0)
            .map(|(_, n)| *n)
            .unwrap();
        let records: i32 = requests.iter().flatten().map(|(_, n)| n).sum();
        assert_eq!(records as usize, FILL_RECORDS + 1, "{requests:?}");
        if lingering_at < full_at || full_records < FULL_BATCH_RECORDS {
            continue;
        }
        assert_eq!(
            lingering_at, full_at,
            "partition 1's lingering record waited for a request of its own: {requests:?}"
        );
        conclusive += 1;
    }
    assert!(conclusive > 0, "every attempt's linger ran out first");
    p.close().await.unwrap();
}

/// krafka change 20: a send that finds room in the buffer awaits nothing, yet a task queueing
/// in a loop must still yield to the runtime every coop budget's worth of sends (as it did
/// when the buffer's semaphore `acquire` took the budget); otherwise the send engine and every
/// other task on its thread wait until the 32 MiB buffer is full. One thread, so only a yield
/// lets the other task run.
#[tokio::test(flavor = "current_thread")]
async fn a_task_queueing_in_a_loop_lets_the_other_tasks_on_its_thread_run() {
    let p = producer_on_fake_broker(Arc::default()).await;
    // The producer started and the topic known: nothing below has a reason to wait.
    p.send_raw(TOPIC, None, vec![1; 10], BTreeMap::new())
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut pending = Vec::new();
    while !ran.load(Ordering::SeqCst) && pending.len() < SENDS_WITHOUT_A_YIELD {
        pending.push(
            p.enqueue_raw(TOPIC, None, Some(vec![0; 10]), BTreeMap::new())
                .await
                .unwrap(),
        );
    }
    assert!(
        ran.load(Ordering::SeqCst),
        "{SENDS_WITHOUT_A_YIELD} sends in a loop never let another task run"
    );
    for d in pending {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

/// krafka change 21: while a batch is in flight, its partition's next batch cannot be sent,
/// and the send engine used to listen to its command channel then: a sender queueing records
/// one by one (meshbus signs each first) woke the engine, and a runtime thread, once a record.
/// Now, while records stream in, the engine looks at the channel when it wakes anyway (a
/// response) or a linger later. The engine's runtime has one worker thread, whose parks count
/// the engine's wakes (the fake broker runs on a runtime of its own and holds each answer
/// HOLD, so batches stay in flight while the records come); the sender is the test's thread,
/// as a signing caller's is. Without the change the worker parked about once a record (1,900
/// times for 2,000); with it, about once a linger.
#[test]
fn a_steady_sender_wakes_the_send_engine_about_once_a_linger_not_once_a_record() {
    let runtime = |workers| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    };
    let broker = runtime(1);
    let port = broker.block_on(fake_broker(Arc::default(), HOLD));
    let client = runtime(1);
    let p = client.block_on(producer_on(port));
    // The producer started and the topic known.
    client
        .block_on(p.send_raw(TOPIC, None, vec![1; 10], BTreeMap::new()))
        .unwrap();
    let mut conclusive = 0;
    for _ in 0..ATTEMPTS {
        if conclusive == STEADY_ENOUGH {
            break;
        }
        let parks_before = client.metrics().worker_park_count(0);
        let started = Instant::now();
        let pending = client.block_on(async {
            let mut pending = Vec::with_capacity(STEADY_RECORDS);
            for _ in 0..STEADY_RECORDS {
                pending.push(
                    p.enqueue_raw(TOPIC, None, Some(vec![0; 100]), BTreeMap::new())
                        .await
                        .unwrap(),
                );
                let spaced = Instant::now();
                while spaced.elapsed() < SPACING {
                    std::hint::spin_loop();
                }
            }
            pending
        });
        let elapsed = started.elapsed();
        let parks = client.metrics().worker_park_count(0) - parks_before;
        client.block_on(async {
            for d in pending {
                d.await.unwrap();
            }
        });
        let lingers = elapsed.as_secs_f64() / LINGER.as_secs_f64();
        if (STEADY_RECORDS as f64) < RECORDS_A_LINGER_TO_TELL * lingers {
            continue;
        }
        // A wake a linger, one a response, and room for the runtime's own.
        assert!(
            parks as f64 <= 2.0 * lingers + 20.0,
            "the send engine's thread parked {parks} times for {STEADY_RECORDS} records queued in {elapsed:?} ({lingers:.0} lingers)"
        );
        conclusive += 1;
    }
    assert!(conclusive > 0, "the sender was too slow in every attempt");
    client.block_on(p.close()).unwrap();
}
