//! Faults real networks make, between the clients and one Apache Kafka node: toxiproxy
//! (`scripts/kafka toxiproxy`, `common/toxiproxy.rs`) sits on the port the node advertises for
//! its plaintext listener, so every connection of the clients under test passes through it.
//! Each fault strikes while records flow, and the checker (`common/checker.rs`) counts every
//! record afterwards:
//! - a 50 KB/s link for 30 s under a consumer: records keep arriving at about the link's speed
//!   (a fetch response slower than the request timeout completes: the timeout counts silence,
//!   vendored krafka change 10), each handled once, commits at the log end;
//! - a 10 s blackhole (nothing passes either way, connections stay open) under a producer and
//!   a consumer: no send fails within the delivery timeout, nothing acknowledged is missing or
//!   stored twice, every record handled once, commits at the log end;
//! - connection resets (RST), three times, while producing and consuming: the same, and
//!   redeliveries are skipped as such, never dead-lettered as `replayed`;
//! - 2 s latency with the data sliced into small pieces: produce and consume complete, once.
//!
//! One node and one toxiproxy serve the tests in turn (each its own topic and group); each test
//! clears the proxy's toxics when it takes its turn.

// Each test holds the turn (a std mutex) for its whole run, on its own runtime: that is the
// point, so holding it across awaits is intended.
#![allow(clippy::await_holding_lock)]

mod common;
use checker::places as handled;
use common::broker::{free_port, Broker};
use common::checker::{self, Handles, Sent};
use common::mesh;
use common::sample;
use common::toxiproxy::{Proxy, Stream, Toxic, Toxiproxy};
use common::vectors;
use meshbus::config::{Compression, Config};
use meshbus::contract::{Kind, Message, Signer};
use meshbus::producer::Producer;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const TOPICS: [&str; 4] = ["link.slow", "link.blackhole", "link.reset", "link.latency"];
/// meshbus's default request timeout (`KAFKA_REQUEST_TIMEOUT_MS`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared node, its toxiproxy and the proxy on the advertised port.
struct Link {
    b: Broker,
    _toxiproxy: Toxiproxy,
    proxy: Proxy,
    advertised: u16,
}

fn link() -> (MutexGuard<'static, ()>, &'static Link) {
    static TURN: Mutex<()> = Mutex::new(());
    static LINK: OnceLock<Link> = OnceLock::new();
    common::logs();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let l = LINK.get_or_init(|| {
        let advertised = free_port();
        let b = Broker::start_with(1, &TOPICS, &["--plain-advertise", &advertised.to_string()]);
        let toxiproxy = Toxiproxy::start(&b);
        let proxy = toxiproxy.proxy("kafka", advertised, b.plain_port());
        Link {
            b,
            _toxiproxy: toxiproxy,
            proxy,
            advertised,
        }
    });
    // A test that failed half-way may have left a toxic behind.
    l.proxy.clear();
    l.proxy.set_enabled(true);
    (turn, l)
}

/// Plaintext through the proxy, meshbus's default timeouts, anomalies on `topic`.
fn proxied(l: &Link, topic: &str) -> Config {
    let mut c = Config::builder()
        .brokers([format!("127.0.0.1:{}", l.advertised)])
        .request_timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    c.topics.insert(Kind::Anomaly, topic.into());
    c
}

/// SASL_SSL straight to the node (no proxy), anomalies on `topic`.
fn direct(l: &Link, topic: &str) -> Config {
    let mut c = l.b.config();
    c.topics.insert(Kind::Anomaly, topic.into());
    c
}

/// A signed anomaly numbered `n` of about `size` bytes, and its encoded value.
fn signed(signer: &Signer, n: u64, size: usize) -> (Message, Vec<u8>) {
    let m = signer.sign_message(Message::Anomaly(sample::anomaly(n, size)));
    let value = m.encode();
    (m, value)
}

/// `tasks` concurrent senders sending the signed anomalies of `range` between them, `pace`
/// apart each, until done or `stop` is set; every outcome lands in `out` as it comes.
#[allow(clippy::too_many_arguments)]
fn produce_stream(
    p: Arc<Producer>,
    signer: Arc<Signer>,
    range: std::ops::Range<u64>,
    size: usize,
    tasks: u64,
    pace: Duration,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Sent>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut senders = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let (p, signer, stop, out) = (p.clone(), signer.clone(), stop.clone(), out.clone());
            let range = range.clone();
            senders.spawn(async move {
                for n in range.filter(|n| n % tasks == task) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (m, value) = signed(&signer, n, size);
                    let started = Instant::now();
                    let r = p.send_message(&m).await;
                    out.lock().unwrap().push(Sent::of(value, started, &r));
                    tokio::time::sleep(pace).await;
                }
            });
        }
        while let Some(r) = senders.join_next().await {
            r.unwrap();
        }
    })
}

/// A consumer of `group` whose handler records every anomaly it handles, with meshbus's
/// default group timing (30 s session, 3 s heartbeats): the tests' usual 6 s session leaves a
/// classic heartbeat no room for a 2 s round trip (see the latency test).
async fn consumer(
    config: &Config,
    group: &str,
    v: &vectors::Vectors,
) -> (
    meshbus::consumer::Consumer,
    Handles,
    Arc<meshbus::metrics::Metrics>,
) {
    let metrics = meshbus::metrics::Metrics::new();
    let handles: Handles = Arc::default();
    // The default membership timing: a slow link must not cost a session.
    let mut settled = mesh::quick(config);
    let defaults = meshbus::config::ConsumerSettings::default();
    settled.consumer.session_timeout = defaults.session_timeout;
    settled.consumer.rebalance_timeout = defaults.rebalance_timeout;
    settled.consumer.heartbeat_interval = defaults.heartbeat_interval;
    let c =
        meshbus::consumer::Consumer::connect(settled, mesh::verifier(v), metrics.clone(), group)
            .await
            .expect("consumer connects through the proxy")
            .handle(Kind::Anomaly, checker::recorder(&handles, 0));
    (c, handles, metrics)
}

fn acked(sent: &Mutex<Vec<Sent>>) -> BTreeSet<(i32, i64)> {
    sent.lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.landed.clone().ok())
        .collect()
}

/// After the fault: waits until every acknowledged record was handled and the group's commits
/// reach the log end, stops the consumer, and returns the checker's produce and consume
/// reports (printed as one line with `extra`).
#[allow(clippy::too_many_arguments)]
async fn settle(
    l: &Link,
    topic: &str,
    group: &str,
    config: &Config,
    sent: &Mutex<Vec<Sent>>,
    handles: &Handles,
    metrics: &meshbus::metrics::Metrics,
    stats: &meshbus::consumer::Stats,
    running: mesh::Running,
    fault: &str,
    extra: String,
) -> (checker::ProduceReport, checker::ConsumeReport) {
    let all = acked(sent);
    let done = mesh::wait_for(Duration::from_secs(180), || {
        all.is_subset(&handled(handles))
    })
    .await;
    let (reached, ends) =
        mesh::commits_reach_end(&l.b, group, topic, Duration::from_secs(60)).await;
    let (stop, task) = running;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let sent = sent.lock().unwrap().clone();
    let produce = checker::check_produce(&l.b, topic, &sent, 0);
    let consume = checker::check_consume(
        &l.b,
        topic,
        &config.dlq_topic,
        group,
        &handles.lock().unwrap(),
        None,
    );
    checker::row(fault, Some(&produce), Some(&consume));
    let redelivered = stats.snapshot().redelivered;
    let scrape = metrics.encode();
    eprintln!(
        "LINK {fault}: sent {}, acked {}, failed {}, in log {}, duplicates {}, handled once {}, more than once {}, replayed {}, redelivered {redelivered}, longest send {:.1?}{extra}",
        produce.sent,
        produce.acked,
        produce.failed_total(),
        produce.in_log,
        produce.duplicates,
        consume.handled_once,
        consume.handled_more,
        consume.replayed(),
        produce.longest_send,
    );
    assert!(
        done,
        "{fault}: acknowledged records were not all handled: {consume:?}"
    );
    assert!(
        reached,
        "{fault}: commits stopped short: {:?} vs {ends:?}",
        l.b.committed(group)
    );
    assert!(
        !scrape.contains("reason=\"replayed\""),
        "{fault}: a redelivery was called a replay"
    );
    (produce, consume)
}

/// The measurement: a 50 KB/s link (broker -> client) for 30 s under a consumer of
/// 2 KiB records, with a burst of about 1 MB produced as the link slows (the fetch that
/// carries it needs about 20 s, twice the request timeout) and a stream of half the link's
/// speed after it. Records keep arriving during the 30 s at about the link's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_kb_per_s_link_still_moves_records_at_about_its_speed() {
    let (_turn, l) = link();
    let (topic, group) = ("link.slow", "link-slow");
    let v = vectors::load();
    let signer = mesh::ai_signer(&v);
    // The producer goes straight to the node; the slow link is the consumer's. No compression,
    // so the bytes on the link are the records' bytes.
    let mut produce_config = direct(l, topic);
    produce_config.producer.compression = Compression::None;
    let p = mesh::producer(&produce_config, Some(signer.clone())).await;
    let consume_config = proxied(l, topic);
    let (c, handles, metrics) = consumer(&consume_config, group, &v).await;
    let stats = c.stats();
    let running = mesh::spawn(c);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let size = 2048;
    let record_bytes = signed(&signer, 0, size).1.len();

    // Records flow at full speed first.
    produce_stream(
        p.clone(),
        signer.clone(),
        0..100,
        size,
        4,
        Duration::ZERO,
        stop.clone(),
        sent.clone(),
    )
    .await
    .unwrap();
    assert!(
        mesh::wait_for(Duration::from_secs(60), || handled(&handles).len() >= 100).await,
        "the consumer did not start"
    );

    // The link slows to 50 KB/s; a burst of ~1 MB, then 25 KB/s on top.
    let toxic = l
        .proxy
        .add(Stream::Downstream, Toxic::Bandwidth { kb_per_s: 50 });
    let slowed = Instant::now();
    let before = handled(&handles).len();
    let burst = 1_000_000 / record_bytes as u64;
    produce_stream(
        p.clone(),
        signer.clone(),
        100..100 + burst,
        size,
        4,
        Duration::ZERO,
        stop.clone(),
        sent.clone(),
    )
    .await
    .unwrap();
    let stream = produce_stream(
        p.clone(),
        signer.clone(),
        100 + burst..100_000,
        size,
        1,
        Duration::from_secs_f64(record_bytes as f64 / 25_000.0),
        stop.clone(),
        sent.clone(),
    );
    let mut progress = Vec::new();
    for _ in 0..3 {
        // The fault's length, in thirds for the progress figures.
        tokio::time::sleep(Duration::from_secs(10)).await;
        progress.push(handled(&handles).len() - before);
    }
    let window = slowed.elapsed();
    let arrived = handled(&handles).len() - before;
    l.proxy.remove(&toxic);
    stop.store(true, Ordering::SeqCst);
    stream.await.unwrap();

    let rate = arrived as f64 / window.as_secs_f64();
    let allowed = 50_000.0 * window.as_secs_f64() / record_bytes as f64;
    let extra = format!(
        ", on the 50 KB/s link: {arrived} records in {window:.1?} ({rate:.1} records/s, {:.1} KB/s of {record_bytes}-byte records; {:.0}% of what the link allows), per 10 s cumulative {progress:?}",
        rate * record_bytes as f64 / 1000.0,
        100.0 * arrived as f64 / allowed,
    );
    let (produce, consume) = settle(
        l,
        topic,
        group,
        &consume_config,
        &sent,
        &handles,
        &metrics,
        &stats,
        running,
        "50 KB/s link for 30 s",
        extra,
    )
    .await;
    assert!(
        arrived as f64 >= 0.4 * allowed,
        "{arrived} records arrived in {window:?} on a 50 KB/s link; it allows {allowed:.0}"
    );
    produce.assert_rode_out("50 KB/s link");
    consume.assert_exactly_once("50 KB/s link");
}

/// A 10 s blackhole (toxiproxy's `timeout` toxic with timeout 0, both ways: nothing passes, the
/// connections stay open and answer nothing, new ones connect and hear nothing) while four
/// senders produce and a group consumes through the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10s_blackhole_fails_no_send_and_loses_or_doubles_nothing() {
    let (_turn, l) = link();
    let (topic, group) = ("link.blackhole", "link-blackhole");
    let v = vectors::load();
    let signer = mesh::ai_signer(&v);
    let config = proxied(l, topic);
    let p = mesh::producer(&config, Some(signer.clone())).await;
    let (c, handles, metrics) = consumer(&config, group, &v).await;
    let stats = c.stats();
    let running = mesh::spawn(c);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stream = produce_stream(
        p.clone(),
        signer.clone(),
        0..800,
        512,
        4,
        Duration::from_millis(40),
        stop.clone(),
        sent.clone(),
    );
    assert!(
        mesh::wait_for(Duration::from_secs(60), || handled(&handles).len() >= 50).await,
        "records did not flow"
    );
    l.proxy.add_both(Toxic::Timeout { ms: 0 });
    let at = Instant::now();
    // The fault's length.
    tokio::time::sleep(Duration::from_secs(10)).await;
    l.proxy.clear();
    let blackhole = at.elapsed();
    stream.await.unwrap();
    let (produce, consume) = settle(
        l,
        topic,
        group,
        &config,
        &sent,
        &handles,
        &metrics,
        &stats,
        running,
        "blackhole 10 s",
        format!(", blackhole {blackhole:.1?}"),
    )
    .await;
    produce.assert_rode_out("blackhole 10 s");
    consume.assert_exactly_once("blackhole 10 s");
}

/// Connections reset (toxiproxy's `reset_peer`: RST at once, on every connection, open or new,
/// while it lasts) three times while records flow both ways through the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_lose_double_and_replay_nothing() {
    let (_turn, l) = link();
    let (topic, group) = ("link.reset", "link-reset");
    let v = vectors::load();
    let signer = mesh::ai_signer(&v);
    let config = proxied(l, topic);
    let p = mesh::producer(&config, Some(signer.clone())).await;
    let (c, handles, metrics) = consumer(&config, group, &v).await;
    let stats = c.stats();
    let running = mesh::spawn(c);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stream = produce_stream(
        p.clone(),
        signer.clone(),
        0..100_000,
        512,
        4,
        Duration::from_millis(20),
        stop.clone(),
        sent.clone(),
    );
    for reset in 0..3 {
        // Each reset strikes while records are being acknowledged and handled.
        let (a, h) = (acked(&sent).len(), handled(&handles).len());
        assert!(
            mesh::wait_for(Duration::from_secs(90), || acked(&sent).len() >= a + 100
                && handled(&handles).len() >= h + 100)
            .await,
            "records did not flow before reset {reset}"
        );
        let toxic = l.proxy.add(Stream::Downstream, Toxic::ResetPeer { ms: 0 });
        // The fault's length: long enough for every connection to be reset.
        tokio::time::sleep(Duration::from_millis(500)).await;
        l.proxy.remove(&toxic);
    }
    let (a, h) = (acked(&sent).len(), handled(&handles).len());
    assert!(
        mesh::wait_for(Duration::from_secs(90), || acked(&sent).len() >= a + 100
            && handled(&handles).len() >= h + 100)
        .await,
        "records did not flow after the resets"
    );
    stop.store(true, Ordering::SeqCst);
    stream.await.unwrap();
    let (produce, consume) = settle(
        l,
        topic,
        group,
        &config,
        &sent,
        &handles,
        &metrics,
        &stats,
        running,
        "3 connection resets",
        String::new(),
    )
    .await;
    produce.assert_rode_out("connection resets");
    consume.assert_exactly_once("connection resets");
}

/// 2 s of latency on what the broker sends, and the data both ways cut into pieces of about
/// 500 bytes, while records flow both ways: every request now takes over 2 s (a fifth of the
/// request timeout). With the tests' usual 6 s session the classic heartbeat's local session
/// deadline (vendored krafka change 2: the send of the last answered heartbeat + 4 s) passes
/// before the next answer (2.5 s later, 2 s on the way), and the member loses its partitions
/// every 14 s; meshbus's default 30 s session rides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seconds_of_latency_with_sliced_data_still_delivers_everything_once() {
    let (_turn, l) = link();
    let (topic, group) = ("link.latency", "link-latency");
    let v = vectors::load();
    let signer = mesh::ai_signer(&v);
    let config = proxied(l, topic);
    let p = mesh::producer(&config, Some(signer.clone())).await;
    let (c, handles, metrics) = consumer(&config, group, &v).await;
    let stats = c.stats();
    let running = mesh::spawn(c);
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stream = produce_stream(
        p.clone(),
        signer.clone(),
        0..320,
        1024,
        16,
        Duration::from_millis(20),
        stop.clone(),
        sent.clone(),
    );
    assert!(
        mesh::wait_for(Duration::from_secs(60), || handled(&handles).len() >= 50).await,
        "records did not flow"
    );
    let latency = l.proxy.add(
        Stream::Downstream,
        Toxic::Latency {
            ms: 2000,
            jitter_ms: 0,
        },
    );
    let slicers = l.proxy.add_both(Toxic::Slicer {
        average: 500,
        variation: 200,
        delay_us: 500,
    });
    let at = Instant::now();
    stream.await.unwrap();
    let under = at.elapsed();
    // Everything acknowledged is handled with the latency still on.
    let all = acked(&sent);
    let done = mesh::wait_for(Duration::from_secs(180), || {
        all.is_subset(&handled(&handles))
    })
    .await;
    l.proxy.remove(&latency);
    for s in slicers {
        l.proxy.remove(&s);
    }
    let (produce, consume) = settle(
        l,
        topic,
        group,
        &config,
        &sent,
        &handles,
        &metrics,
        &stats,
        running,
        "latency 2 s + slicer",
        format!(", produced under the fault for {under:.1?}, all handled under it: {done}"),
    )
    .await;
    assert!(done, "records were not handled under the latency");
    produce.assert_rode_out("latency 2 s + slicer");
    consume.assert_exactly_once("latency 2 s + slicer");
}
