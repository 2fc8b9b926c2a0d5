//! The replay guard across restarts and partition moves (SPEC 3e), on one Apache Kafka node:
//! a validator killed with SIGKILL and restarted still refuses byte-identical replays of what
//! it handled (on the same partition and on others); a member that gains a partition in a
//! rebalance refuses a replay of what the other member handled there; a forged record carrying
//! an honest producer's nonce in the read-back window reserves nothing; a read-back cut short
//! by its record bound is reported and reads the newest records. Each test has its own
//! topic and group.

mod common;
use common::broker::Broker;
use common::cli::{
    consumed_places, meshbus, probe, run, signal, spawn_collecting, text, wait_exit,
};
use common::{mesh, sample, vectors};
use meshbus::contract::{Kind, Message};
use prost::Message as _;
use std::collections::BTreeSet;
use std::time::Duration;

use common::broker::shared as broker;

fn config_for(b: &Broker, topic: &str) -> meshbus::config::Config {
    let mut c = b.config();
    c.topics.insert(Kind::Anomaly, topic.into());
    c
}

/// Dead letters of `topic` as (reason, original partition, original offset).
fn dead_letters(b: &Broker, topic: &str) -> Vec<(String, i64, i64)> {
    let out = run(meshbus().envs(b.env()).args(["dlq", "list", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["original_topic"] == topic)
        .map(|r| {
            let num = |k: &str| {
                r[k].as_i64()
                    .or_else(|| r[k].as_str().and_then(|s| s.parse().ok()))
                    .unwrap()
            };
            (
                r["reason"].as_str().unwrap().to_string(),
                num("original_partition"),
                num("original_offset"),
            )
        })
        .collect()
}

fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// Handled records (partition, offset) a `consume --json` process printed so far.
fn printed(lines: &std::sync::Mutex<Vec<String>>) -> Vec<(i32, i64)> {
    consumed_places(&lines.lock().unwrap())
}

#[test]
fn a_validator_killed_and_restarted_refuses_replays_of_what_it_handled_on_every_partition() {
    let b = broker();
    let topic = "rg.restart";
    b.create_topics(3, &[], &[topic]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ai.pem");
    assert!(run(meshbus().args(["keygen", "--out"]).arg(&key))
        .status
        .success());
    let produce = |n: usize| {
        let out = run(meshbus()
            .envs(b.env())
            .env("KAFKA_TOPIC_ANOMALY", topic)
            .args(["produce", "--kind", "anomaly", "--size", "200", "--key"])
            .arg(&key)
            .args(["--sample", &n.to_string()]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let port = common::broker::free_port();
    let consume = || {
        spawn_collecting(
            meshbus()
                .envs(b.env())
                .env("KAFKA_TOPIC_ANOMALY", topic)
                .args([
                    "consume",
                    "--kind",
                    "anomaly",
                    "--group",
                    "rg-restart",
                    "--json",
                ])
                .args([
                    "--log",
                    "info",
                    "--metrics-addr",
                    &format!("127.0.0.1:{port}"),
                ]),
        )
    };
    produce(30);
    let (mut first, lines) = consume();
    assert!(
        wait(Duration::from_secs(90), || printed(&lines).len() >= 30),
        "the validator handled {} of 30",
        printed(&lines).len()
    );
    let (committed, ends) = futures_block(mesh::commits_reach_end(
        b,
        "rg-restart",
        topic,
        Duration::from_secs(60),
    ));
    assert!(committed, "{:?} vs {ends:?}", b.committed("rg-restart"));
    let handled_first: BTreeSet<_> = printed(&lines).into_iter().collect();
    assert_eq!(handled_first.len(), 30);
    first.kill().unwrap(); // SIGKILL: no shutdown, no leave
    first.wait().unwrap();

    // The log as it stands: three handled records to replay byte for byte.
    let log = b.py_read(topic, 30);
    let pick = |p: i64| {
        log.iter()
            .find(|r| r["partition"].as_i64() == Some(p))
            .unwrap_or_else(|| panic!("no record on partition {p}"))
    };
    let replays: Vec<(i32, Vec<u8>)> = [(0, 0), (1, 2), (2, 0)]
        .iter()
        .map(|&(from, onto)| {
            let r = pick(from);
            (onto, hex::decode(r["value"].as_str().unwrap()).unwrap())
        })
        .collect();

    let (mut second, lines) = consume();
    let (code, body) = common::cli::wait_probe(port, 200, Duration::from_secs(90));
    assert_eq!(code, 200, "not ready after the restart: {body}");
    let scrape = probe(port, "/metrics").1;
    assert!(
        scrape.contains(&format!(
            "meshbus_replay_warmup_records_total{{topic=\"{topic}\"}} 30"
        )),
        "{scrape}"
    );
    b.py_produce_at(topic, &replays);
    produce(5);
    let all_in = wait(Duration::from_secs(90), || {
        printed(&lines).len() >= 5
            && dead_letters(b, topic)
                .iter()
                .filter(|d| d.0 == "replayed")
                .count()
                >= 3
    });
    signal(second.id(), "TERM");
    let (status, stderr, _) = wait_exit(&mut second, Duration::from_secs(60));
    assert!(all_in, "{:?}\n{stderr}", dead_letters(b, topic));
    let handled_second: Vec<_> = printed(&lines);
    assert_eq!(handled_second.len(), 5, "{handled_second:?}\n{stderr}");
    assert!(
        handled_second.iter().all(|h| !handled_first.contains(h)),
        "an original was handled again: {handled_second:?}"
    );
    let dead = dead_letters(b, topic);
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(dead.iter().all(|d| d.0 == "replayed"), "{dead:?}");
    let onto: BTreeSet<i64> = dead.iter().map(|d| d.1).collect();
    assert_eq!(onto, BTreeSet::from([0, 2]), "{dead:?}");
    assert_eq!(status, Some(0), "{stderr}");
}

/// Runs a future to completion on a fresh runtime (the CLI tests are synchronous).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Signs `n` anomalies and sends them raw, keyed by the table's key rule; returns each
/// record's (partition, offset, bytes).
async fn send_signed(
    p: &meshbus::producer::Producer,
    signer: &meshbus::contract::Signer,
    topic: &str,
    ids: std::ops::Range<u64>,
) -> Vec<(i32, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in ids {
        let m = Message::Anomaly(signer.sign_ai(sample::anomaly(i, 100)));
        let bytes = m.encode();
        let d = p
            .send_raw(topic, m.record_key(), bytes.clone(), Default::default())
            .await
            .unwrap();
        out.push((d.partition, d.offset, bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_gains_a_partition_refuses_a_replay_of_what_the_other_member_handled_there() {
    let b = broker();
    let topic = "rg.moved";
    b.create_topics(2, &[], &[topic]);
    let v = vectors::load();
    let config = config_for(b, topic);
    let group = "rg-moved";
    let (a, seen_a, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        group,
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let offsets_a = a.offsets();
    let (stop_a, task_a) = mesh::spawn(a);
    let raw = mesh::producer(&config, None).await;
    let signer = mesh::ai_signer(&v);
    let sent = send_signed(&raw, &signer, topic, 0..40).await;
    assert!(
        mesh::wait_for(Duration::from_secs(60), || seen_a.lock().unwrap().len()
            >= 40)
        .await,
        "member A handled {}",
        seen_a.lock().unwrap().len()
    );
    let (committed, _) = mesh::commits_reach_end(b, group, topic, Duration::from_secs(30)).await;
    assert!(committed);

    // Member B joins: its own process state (a fresh verifier, so an empty guard).
    let (c, seen_b, metrics_b) = mesh::recording_consumer(
        &mesh::quick(&config),
        group,
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let (offsets_b, stats_b, health_b) = (c.offsets(), c.stats(), c.health());
    let (stop_b, task_b) = mesh::spawn(c);
    let split = mesh::wait_for(Duration::from_secs(60), || {
        let (pa, pb) = (offsets_a.progress(), offsets_b.progress());
        pa.len() == 1
            && pb.len() == 1
            && pa.keys().next() != pb.keys().next()
            && health_b.warming() == 0
    })
    .await;
    assert!(
        split,
        "{:?} / {:?}",
        offsets_a.progress(),
        offsets_b.progress()
    );
    let moved = offsets_b.progress().keys().next().unwrap().1;
    let (_, offset, bytes) = sent
        .iter()
        .find(|(p, _, _)| *p == moved)
        .expect("A handled records on the partition B gained")
        .clone();
    assert!(seen_a
        .lock()
        .unwrap()
        .iter()
        .any(|(_, p, o)| *p == moved && *o == offset));
    b.py_produce_at(topic, &[(moved, bytes)]);
    // A fresh record on the moved partition still flows.
    let fresh = loop {
        let s = send_signed(&raw, &signer, topic, 1000..1001).await;
        if s[0].0 == moved {
            break s[0].clone();
        }
    };
    let done = mesh::wait_for(Duration::from_secs(60), || {
        let meshbus::consumer::StatsSnapshot {
            dead_lettered: dead,
            ..
        } = stats_b.snapshot();
        dead >= 1
            && seen_b
                .lock()
                .unwrap()
                .iter()
                .any(|(_, p, o)| (*p, *o) == (fresh.0, fresh.1))
    })
    .await;
    let scrape = metrics_b.encode();
    stop_b.send(()).unwrap();
    task_b.await.unwrap().unwrap();
    stop_a.send(()).unwrap();
    task_a.await.unwrap().unwrap();
    assert!(done, "{:?}\n{scrape}", stats_b.snapshot());
    assert!(
        scrape.contains(&format!(
            "kafka_dlq_messages_total{{topic=\"{topic}\",reason=\"replayed\"}} 1"
        )),
        "{scrape}"
    );
    assert!(stats_b.snapshot().read_back > 0, "B read nothing back");
    let on_moved = |s: &mesh::Seen| {
        s.lock()
            .unwrap()
            .iter()
            .filter(|(_, p, o)| *p == moved && *o > offset)
            .count()
    };
    // B handled only the fresh record there; the replay went to the DLQ, not to a handler.
    assert_eq!(on_moved(&seen_b), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_in_the_read_back_window_does_not_reserve_the_honest_producers_nonce() {
    let b = broker();
    let topic = "rg.forged";
    b.create_topics(1, &[], &[topic]);
    let v = vectors::load();
    let config = config_for(b, topic);
    let group = "rg-forged";
    let signer = mesh::ai_signer(&v);
    let honest = signer.sign_ai(sample::anomaly(7, 100));
    let mut forged = honest.clone();
    let mut signature = forged.signature.to_vec();
    signature[3] ^= 0x40; // the honest (producer_id, nonce), a bad signature
    forged.signature = signature.into();
    let raw = mesh::producer(&config, None).await;
    raw.send_raw(topic, None, forged.encode_to_vec(), Default::default())
        .await
        .unwrap();
    // A first validator dead-letters the forgery and commits past it.
    let (seen, stats, running) = mesh::running_anomaly_consumer(&config, group, &v).await;
    assert!(mesh::wait_counts(&stats, 0, 1, Duration::from_secs(60)).await);
    let (committed, _) = mesh::commits_reach_end(b, group, topic, Duration::from_secs(30)).await;
    assert!(committed);
    running.0.send(()).unwrap();
    running.1.await.unwrap().unwrap();
    assert!(seen.lock().unwrap().is_empty());

    // The honest record arrives; a restarted validator reads the forgery back first.
    let d = raw
        .send_raw(topic, None, honest.encode_to_vec(), Default::default())
        .await
        .unwrap();
    let (seen, stats, running) = mesh::running_anomaly_consumer(&config, group, &v).await;
    let handled = mesh::wait_counts(&stats, 1, 0, Duration::from_secs(60)).await;
    running.0.send(()).unwrap();
    running.1.await.unwrap().unwrap();
    assert!(handled, "{:?}", stats.snapshot());
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(topic.to_string(), 0, d.offset)]
    );
    assert_eq!(stats.snapshot().read_back, 1, "the forgery was read back");
}

/// A read-back cut short by its record bound says so (metric, counter) and reads the newest
/// records: a replay of one of those is refused, a replay of an older one is not (the
/// documented gap; the consumer does not pretend otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_cut_short_by_its_record_bound_is_reported_and_reads_the_newest() {
    let b = broker();
    let topic = "rg.bounded";
    b.create_topics(1, &[], &[topic]);
    let v = vectors::load();
    let config = config_for(b, topic);
    let group = "rg-bounded";
    let raw = mesh::producer(&config, None).await;
    let sent = send_signed(&raw, &mesh::ai_signer(&v), topic, 0..30).await;
    let (_, stats, running) = mesh::running_anomaly_consumer(&config, group, &v).await;
    assert!(mesh::wait_counts(&stats, 30, 0, Duration::from_secs(60)).await);
    let (committed, _) = mesh::commits_reach_end(b, group, topic, Duration::from_secs(30)).await;
    assert!(committed);
    running.0.send(()).unwrap();
    running.1.await.unwrap().unwrap();

    // A restarted member that may read back only the 10 newest records.
    let mut bounded = config.clone();
    bounded.consumer.warmup.max_records = 10;
    let (c, seen, metrics) = mesh::recording_consumer(
        &mesh::quick(&bounded),
        group,
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let (stats, health) = (c.stats(), c.health());
    let (stop, task) = mesh::spawn(c);
    let warm = mesh::wait_for(Duration::from_secs(60), || {
        stats.snapshot().read_back == 10 && health.warming() == 0
    })
    .await;
    assert!(warm, "read back {}", stats.snapshot().read_back);
    assert_eq!(stats.snapshot().read_back_cut, 1);
    let scrape = metrics.encode();
    assert!(
        scrape.contains(&format!(
            "meshbus_replay_warmup_cut_total{{topic=\"{topic}\",bound=\"records\"}} 1"
        )),
        "{scrape}"
    );
    // The newest record was read back: its replay is refused. The oldest was not.
    b.py_produce_at(topic, &[(0, sent[29].2.clone()), (0, sent[0].2.clone())]);
    let settled = mesh::wait_for(Duration::from_secs(60), || {
        let meshbus::consumer::StatsSnapshot {
            handled: h,
            dead_lettered: d,
            ..
        } = stats.snapshot();
        h == 1 && d == 1
    })
    .await;
    let scrape = metrics.encode();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(settled, "{:?}\n{scrape}", stats.snapshot());
    assert!(
        scrape.contains(&format!(
            "kafka_dlq_messages_total{{topic=\"{topic}\",reason=\"replayed\"}} 1"
        )),
        "{scrape}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the unread original's copy was handled"
    );
}
