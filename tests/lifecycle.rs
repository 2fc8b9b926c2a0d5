//! The client's lifecycle on Apache Kafka (one shared node): `Mesh::shutdown` with sends in
//! flight, `Producer::close`, the producer rate limit, and the command's graceful stop on
//! SIGTERM (commit what was handled, exit 0, the next member starts where it stopped).

mod common;
use common::broker::Broker;
use common::cli::{
    consumed_places, meshbus, probe, run, signal, spawn_collecting, text, wait_exit, wait_probe,
};
use meshbus::mesh::Mesh;
use meshbus::producer::SendError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::broker::shared as broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_thousand_sends_in_flight_loses_none() {
    let b = broker();
    b.create_topics(3, &[], &["life.flush"]);
    let mut config = b.config();
    // Paced at 2000/s so that the 1000 sends are still going when the stop comes (unpaced,
    // loopback acknowledges them all before a test can look).
    config.producer.max_records_per_sec = Some(2000);
    let mesh = Mesh::builder(config.clone()).connect().await.unwrap();
    let producer = mesh.producer().clone();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let p = producer.clone();
        sends.spawn(async move {
            let mut value = vec![0u8; 1024];
            value[..4].copy_from_slice(&i.to_be_bytes());
            p.send_raw("life.flush", None, value, BTreeMap::new()).await
        });
    }
    // Shut down while hundreds are still unacknowledged.
    let busy = common::mesh::wait_for(Duration::from_secs(10), || {
        let c = producer.counts();
        c.in_flight >= 200 && c.acknowledged >= 100
    })
    .await;
    assert!(busy, "sends never piled up: {:?}", producer.counts());
    let report = mesh.shutdown(Duration::from_secs(20)).await;
    assert!(report.in_flight_at_start >= 200, "{report}");
    assert!(report.flushed > 0, "{report}");
    assert_eq!(report.unflushed, 0, "{report}");
    assert_eq!(
        report.flushed + report.failed,
        report.in_flight_at_start,
        "{report}"
    );

    let mut landed = BTreeSet::new();
    let mut closed = 0;
    while let Some(r) = sends.join_next().await {
        match r.unwrap() {
            Ok(d) => assert!(landed.insert((d.partition, d.offset)), "{d:?} twice"),
            Err(SendError::Closed) => closed += 1,
            Err(e) => panic!("a send failed other than by the close: {e}"),
        }
    }
    assert_eq!(landed.len() + closed, 1000);
    assert_eq!(closed as u64, report.refused, "{report}");
    // Every acknowledged send is in the log, and nothing else is.
    let ends = b.end_offsets(&["life.flush"]);
    let in_log: BTreeSet<(i32, i64)> = ends
        .iter()
        .flat_map(|((_, p), end)| (0..*end).map(move |o| (*p, o)))
        .collect();
    assert_eq!(in_log, landed);
    // The handle stays closed.
    let late = producer
        .send_raw("life.flush", None, b"late".to_vec(), BTreeMap::new())
        .await;
    assert!(matches!(late, Err(SendError::Closed)), "{late:?}");
    eprintln!(
        "shutdown: {report}; acknowledged {}, refused {closed}",
        landed.len()
    );
}

/// Sends from 64 tasks for `window`; the number acknowledged within it.
async fn send_for(mesh: &Mesh, topic: &str, window: Duration) -> usize {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let p = mesh.producer().clone();
        let topic = topic.to_string();
        tasks.spawn(async move {
            let mut acked = 0;
            while started.elapsed() < window {
                p.send_raw(&topic, None, vec![7u8; 200], BTreeMap::new())
                    .await
                    .unwrap();
                if started.elapsed() <= window {
                    acked += 1;
                }
            }
            acked
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_records_per_second_cap_holds_within_ten_percent() {
    let b = broker();
    b.create_topics(3, &[], &["life.rate"]);
    let config = b.config();
    // Uncapped, the same senders go well past the cap, so the cap is what holds them.
    let free = Mesh::builder(config.clone()).connect().await.unwrap();
    let uncapped = send_for(&free, "life.rate", Duration::from_secs(1)).await;
    free.shutdown(Duration::from_secs(10)).await;
    assert!(uncapped > 1000, "uncapped only {uncapped}/s");

    let mut capped = config.clone();
    capped.producer.max_records_per_sec = Some(500);
    let mesh = Mesh::builder(capped.clone()).connect().await.unwrap();
    let sent = send_for(&mesh, "life.rate", Duration::from_secs(5)).await;
    let rate = sent as f64 / 5.0;
    assert!(
        (450.0..=550.0).contains(&rate),
        "{sent} records in 5 s = {rate}/s"
    );
    let scraped = mesh.metrics().encode();
    let throttled: f64 = scraped
        .lines()
        .find(|l| l.starts_with("kafka_producer_throttled_seconds_total{topic=\"life.rate\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // 64 senders mostly waiting for 5 s: far more than a second of waiting in all.
    assert!(throttled > 10.0, "throttled {throttled} s\n{scraped}");
    assert!(mesh.shutdown(Duration::from_secs(10)).await.is_clean());
    eprintln!("uncapped {uncapped}/s; capped at 500/s: {rate}/s; throttled {throttled:.1} s");
}

/// How both members of the SIGTERM test consume: the same group, so the second resumes where
/// the first committed.
const SIGTERM_CONSUME: [&str; 6] = [
    "consume",
    "--kind",
    "anomaly",
    "--group",
    "life-sigterm",
    "--json",
];

#[test]
fn sigterm_stops_produce_and_consume_gracefully_and_the_next_member_resumes() {
    let b = broker();
    let topic = "life.sigterm.anomalies";
    b.create_topics(3, &[], &[topic]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ai.pem");
    assert!(run(meshbus().args(["keygen", "--out"]).arg(&key))
        .status
        .success());
    let env = |c: &mut std::process::Command| {
        c.envs(b.env())
            .env("KAFKA_TOPIC_ANOMALY", topic)
            .env("MESHBUS_SHUTDOWN_TIMEOUT_MS", "8000");
    };

    // A producer streaming at 300/s, and a consumer reading along.
    let mut produce = meshbus();
    env(&mut produce);
    produce
        .env("KAFKA_PRODUCER_MAX_RECORDS_PER_SEC", "300")
        .args([
            "produce",
            "--kind",
            "anomaly",
            "--sample",
            "6000",
            "--size",
            "200",
            "--json-output",
            "--key",
        ])
        .arg(&key);
    let (mut producer, delivered) = spawn_collecting(&mut produce);
    let mut consume = meshbus();
    env(&mut consume);
    // The consumer logs its stop at info (on stderr, shown if the test fails): once, beside a
    // static build, it missed its 8 s deadline, and the log will say which step took the time.
    consume
        .env("MESHBUS_LOG", "warn,meshbus=info,krafka::consumer=info")
        .args(SIGTERM_CONSUME);
    let (mut consumer, handled) = spawn_collecting(&mut consume);

    // Mid-stream: SIGTERM to the consumer, then to the producer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the consumer never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(consumer.id(), "TERM");
    // Within the 8 s shutdown deadline (MESHBUS_SHUTDOWN_TIMEOUT_MS), however busy the
    // machine: past it the command would exit 3.
    let (code, err, took) = wait_exit(&mut consumer, Duration::from_secs(40));
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let first: Vec<(i32, i64)> = consumed_places(&handled.lock().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    signal(producer.id(), "TERM");
    let (code, err, _) = wait_exit(&mut producer, Duration::from_secs(10));
    // Stopped before all 6000 were sent: exit 1, and it says so.
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not sent"), "{err}");
    let sent = delivered.lock().unwrap().len() as i64;
    assert!((600..6000).contains(&sent), "sent {sent}");

    // Every delivery the producer printed is in the log, and nothing else.
    let ends = b.end_offsets(&[topic]);
    assert_eq!(ends.values().sum::<i64>(), sent, "{ends:?}");
    // The consumer committed exactly what it handled, each record once, in order.
    let committed = b.committed("life-sigterm");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &first {
        let n = next.entry(*p).or_insert(0);
        assert_eq!(o, n, "partition {p}: gap or repeat before the stop");
        *n += 1;
    }
    for (p, n) in &next {
        assert_eq!(
            committed.get(&(topic.to_string(), *p)),
            Some(n),
            "{committed:?}"
        );
    }

    // The next member starts exactly where the stopped one committed.
    let rest = sent - first.len() as i64;
    let mut again = meshbus();
    env(&mut again);
    let out = run(again.args(SIGTERM_CONSUME).args([
        "--max",
        &rest.to_string(),
        // An upper bound only (`--max` ends it): a debug build verifying thousands of records,
        // after reading the first member's back into its replay guard, on a loaded machine.
        "--seconds",
        "300",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = consumed_places(
        &text(&out.stdout)
            .lines()
            .map(String::from)
            .collect::<Vec<_>>(),
    );
    for (p, o) in &second {
        let n = next.entry(*p).or_insert(0);
        assert_eq!(
            o, n,
            "partition {p}: the restarted member did not resume in order"
        );
        *n += 1;
    }
    assert_eq!(first.len() + second.len(), sent as usize);
    eprintln!(
        "sigterm: produced {sent}, first member handled {} (stopped in {took:?}), second {}",
        first.len(),
        second.len()
    );
}

#[test]
fn a_partition_stalled_on_an_unwritable_dead_letter_makes_consume_exit_non_zero() {
    let b = broker();
    let topic = "life.stall.anomalies";
    b.create_topics(1, &[], &[topic]);
    // A record that fails verification, with a DLQ topic that does not exist (and is never
    // auto-created): its dead letter can never be written.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = b.config();
        let mesh = Mesh::builder(config.clone()).connect().await.unwrap();
        mesh.producer()
            .send_raw(topic, None, b"not a protobuf".to_vec(), BTreeMap::new())
            .await
            .unwrap();
        assert!(mesh.shutdown(Duration::from_secs(10)).await.is_clean());
    });
    let out = run(meshbus()
        .envs(b.env())
        .env("KAFKA_TOPIC_ANOMALY", topic)
        .env("KAFKA_DLQ_TOPIC", "life.no-such-dlq")
        // The harness's 10 s request timeout and the default 120 s delivery timeout: the dead
        // letter's write is still waiting when the 15 s are up, and the stop must not wait
        // for it (it used to end in exit 3, "did not stop within the deadline").
        .args([
            "consume",
            "--kind",
            "anomaly",
            "--group",
            "life-stall",
            "--seconds",
            "15",
        ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stalled partitions 1"), "{err}");
    // Nothing was committed past the record.
    assert_eq!(
        b.committed("life-stall")
            .get(&(topic.to_string(), 0))
            .copied()
            .unwrap_or(0),
        0
    );
}

#[test]
fn readyz_follows_the_group_join_and_the_brokers_and_healthz_the_process() {
    // Its own node: this test stops and restarts the cluster.
    let mut b = Broker::start(&[]);
    let port = common::broker::free_port();
    let mut c = meshbus();
    c.envs(b.env())
        .env("KAFKA_REQUEST_TIMEOUT_MS", "3000")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["consume", "--kind", "anomaly", "--group", "life-ready"]);
    let (mut consumer, _) = spawn_collecting(&mut c);
    let (code, body) = wait_probe(port, 200, Duration::from_secs(60));
    assert_eq!(code, 200, "never ready: {body}");
    for check in [
        "connected ok",
        "group_joined ok",
        "assignment_held ok",
        "breaker_closed ok",
    ] {
        assert!(body.contains(check), "{body}");
    }
    assert_eq!(probe(port, "/healthz"), (200, "ok\n".into()));

    // The cluster goes away: not ready (the heartbeat's session deadline passes, so the
    // assignment is no longer held), but alive.
    b.stop();
    let (code, body) = wait_probe(port, 503, Duration::from_secs(60));
    assert_eq!(code, 503, "still ready with the cluster down: {body}");
    assert!(body.contains("assignment_held failing"), "{body}");
    assert_eq!(probe(port, "/healthz").0, 200);

    // It comes back: ready again, without a restart of the consumer.
    b.restart();
    let (code, body) = wait_probe(port, 200, Duration::from_secs(90));
    assert_eq!(code, 200, "not ready after the cluster came back: {body}");

    signal(consumer.id(), "TERM");
    let (code, err, _) = wait_exit(&mut consumer, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        probe(port, "/healthz").0,
        0,
        "the endpoint ends with the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_readiness_check_fails_for_its_own_reason() {
    let b = broker();
    b.create_topics(1, &[], &["life.ready"]);
    let mut config = b.config();
    config
        .topics
        .insert(meshbus::contract::Kind::Anomaly, "life.ready".into());
    // Long enough to connect on a loaded machine; each failed send below waits it out.
    config.request_timeout = Duration::from_secs(5);
    config.producer.max_retries = 0;
    let mut mesh = Mesh::builder(config.clone()).connect().await.unwrap();
    let ready = mesh.readiness();
    let failing = || -> Vec<&'static str> {
        ready
            .checks()
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| n)
            .collect()
    };
    assert!(
        failing().is_empty(),
        "a connected producer-only role is ready"
    );

    // A consumer registered but not started: not joined, not holding, not polling.
    let consumer = mesh
        .consumer("life-ready")
        .unwrap()
        .handle(meshbus::contract::Kind::Anomaly, |_r| async { Ok(()) });
    mesh.register(consumer);
    assert_eq!(failing(), ["connected", "group_joined", "assignment_held"]);
    mesh.start();
    assert!(
        common::mesh::wait_for(Duration::from_secs(30), || failing().is_empty()).await,
        "{:?}",
        failing()
    );

    // Five failed sends open the breaker.
    for _ in 0..5 {
        let r = mesh
            .producer()
            .send_raw("life.no-such-topic", None, b"x".to_vec(), BTreeMap::new())
            .await;
        assert!(r.is_err());
    }
    assert_eq!(failing(), ["breaker_closed"]);

    // A shutdown stops accepting sends first.
    mesh.producer().stop_accepting();
    assert_eq!(failing(), ["breaker_closed", "accepting_sends"]);
    mesh.shutdown(Duration::from_secs(10)).await;
}
