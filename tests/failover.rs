//! Broker faults on a three-node Apache Kafka cluster (each node broker + controller,
//! replication 3, min.insync.replicas 2), each with a checker that counts every record:
//! kill -9 of the partition leader while producing, the leader frozen (SIGSTOP) for 20 s while
//! producing (no send fails within the delivery timeout), kill -9 of the group coordinator while
//! consuming, the group coordinator frozen (SIGSTOP) while consuming (redeliveries are not
//! replays; a caught-up member is back within a session of the freeze's end with one member id,
//! also after the coordinator moves back), a leader moved by restart and preferred-leader
//! election, and a whole-cluster restart. One cluster serves the tests one after another (each
//! on its own topic and group); a test that stops nodes starts them again before it ends.

// Each test holds the cluster turn (a std mutex) for its whole run, on its own runtime:
// that is the point, so holding it across awaits is intended.
#![allow(clippy::await_holding_lock)]

mod common;
use common::broker::Broker;
use common::mesh;
use common::sample;
use common::vectors;
use meshbus::config::ProducerSettings;
use meshbus::contract::Kind;
use meshbus::producer::{Producer, SendError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const TOPICS: [&str; 7] = [
    "fo.leader",
    "fo.frozen",
    "fo.coordinator",
    "fo.paused",
    "fo.moved",
    "fo.restart",
    "fo.rejoin",
];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// The shared cluster, and the lock that makes its tests take turns.
fn cluster() -> (MutexGuard<'static, ()>, &'static Broker) {
    static TURN: Mutex<()> = Mutex::new(());
    static CLUSTER: OnceLock<Broker> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let b = CLUSTER.get_or_init(|| {
        let b = Broker::start_nodes(3, &TOPICS);
        assert_eq!(b.nodes().len(), 3);
        b
    });
    (turn, b)
}

/// Starts every node that is not running (after a test that killed some failed half-way).
fn all_up(b: &Broker) {
    for n in b.nodes() {
        if std::net::TcpStream::connect(("127.0.0.1", n.sasl_ssl)).is_err() {
            b.restart_node(n.id);
        }
    }
}

fn config(b: &Broker, max_retries: usize) -> meshbus::config::Config {
    let mut c = b.config();
    c.request_timeout = REQUEST_TIMEOUT;
    c.producer = ProducerSettings {
        max_retries,
        retry_backoff: Duration::from_millis(200),
        retry_backoff_max: Duration::from_secs(2),
        breaker_failures: 1_000,
        ..c.producer
    };
    c
}

/// One send's outcome: which record, where it landed (or why not), how long it took.
#[derive(Debug, Clone)]
struct Sent {
    task: usize,
    seq: usize,
    landed: Result<(i32, i64), String>,
    took: Duration,
}

fn value(task: usize, seq: usize) -> Vec<u8> {
    let mut v = format!("task-{task}-seq-{seq:06}-").into_bytes();
    v.resize(512, b'.');
    v
}

/// `tasks` concurrent senders, each sending `per_task` keyed records (one key per task, so
/// one partition per task) to `topic`, `pace` apart. Returns every outcome.
async fn produce_stream(
    p: Arc<Producer>,
    topic: &'static str,
    tasks: usize,
    per_task: usize,
    pace: Duration,
) -> Vec<Sent> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let p = p.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for seq in 0..per_task {
                let started = Instant::now();
                let r = p
                    .send_raw(
                        topic,
                        Some(format!("key-{task}").into_bytes()),
                        value(task, seq),
                        BTreeMap::new(),
                    )
                    .await;
                out.push(Sent {
                    task,
                    seq,
                    landed: r.map(|d| (d.partition, d.offset)).map_err(|e| match e {
                        SendError::Transport { source, .. } => format!("{source:?}"),
                        e => e.to_string(),
                    }),
                    took: started.elapsed(),
                });
                tokio::time::sleep(pace).await;
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

/// Reads the whole of `topic` and checks the producer's outcomes against it: every record
/// acknowledged is at its offset, exactly once, and each task's acknowledged records are in
/// order within their partition. Returns (acknowledged, failed, records in the log).
fn check_log(b: &Broker, topic: &str, sent: &[Sent]) -> (usize, usize, usize) {
    let total: i64 = b.end_offsets(&[topic]).values().sum();
    let rows = b.py_read(topic, total as usize);
    let mut log: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    let mut copies: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &rows {
        let v = hex::decode(r["value"].as_str().unwrap()).unwrap();
        *copies.entry(v.clone()).or_default() += 1;
        log.insert(
            (
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            ),
            v,
        );
    }
    let mut ok = 0;
    let mut last: BTreeMap<usize, (i64, usize)> = BTreeMap::new();
    let mut acked: Vec<&Sent> = sent.iter().filter(|s| s.landed.is_ok()).collect();
    acked.sort_by_key(|s| s.landed.clone().unwrap());
    for s in acked {
        let (p, o) = s.landed.clone().unwrap();
        let v = value(s.task, s.seq);
        assert_eq!(
            log.get(&(p, o)),
            Some(&v),
            "acknowledged record not at {p}/{o}"
        );
        assert_eq!(copies[&v], 1, "task {} seq {} stored twice", s.task, s.seq);
        if let Some((prev_o, prev_seq)) = last.get(&s.task) {
            assert!(
                o > *prev_o && s.seq > *prev_seq,
                "task {} out of order: seq {} at {o} after seq {prev_seq} at {prev_o}",
                s.task,
                s.seq
            );
        }
        last.insert(s.task, (o, s.seq));
        ok += 1;
    }
    for v in copies.keys() {
        assert!(copies[v] == 1, "a record is stored twice");
    }
    (ok, sent.len() - ok, rows.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_partition_leader_loses_no_acknowledged_record() {
    let (_turn, b) = cluster();
    all_up(b);
    let config = config(b, 0);
    let p = mesh::producer(&config, None).await;
    let first = warm_up(&p, "fo.leader").await;
    let leader = b.leaders("fo.leader")[&first.partition];
    let stream = tokio::spawn(produce_stream(
        p.clone(),
        "fo.leader",
        4,
        150,
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.kill_node(leader);
    let killed_at = Instant::now();
    let sent = stream.await.unwrap();
    eprintln!(
        "leader {leader} killed; stream ended {:?} later",
        killed_at.elapsed()
    );
    let new_leader = b.leaders("fo.leader")[&first.partition];
    assert_ne!(new_leader, leader, "leadership did not move");
    assert_rode_out(b, "fo.leader", &sent, "leader kill");
    b.restart_node(leader);
}

/// An outage far shorter than the 120 s delivery timeout: the client rode it out, retrying
/// the same idempotent batches, so no send failed, none is stored twice, and the log holds
/// exactly the acknowledged records and the warm-up record.
fn assert_rode_out(b: &Broker, topic: &str, sent: &[Sent], fault: &str) {
    let (ok, failed, in_log) = check_log(b, topic, sent);
    let longest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!("{fault}: {ok} acknowledged, {failed} failed, {in_log} records in the log (incl. warm-up), longest send {longest:?}");
    let failures: Vec<_> = sent.iter().filter_map(|s| s.landed.clone().err()).collect();
    assert!(failures.is_empty(), "sends failed: {failures:?}");
    assert_eq!(
        in_log,
        ok + 1,
        "the log holds other records than the acknowledged ones"
    );
}

/// SPEC 8: the partition leader frozen (SIGSTOP) for 20 s while four senders produce. Its
/// connections stay open and answer nothing; leadership moves once the controller fences it.
/// Within the delivery timeout the client retries the same idempotent batches: no send fails,
/// no record is stored twice, every acknowledged record is at its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_partition_leader_fails_no_send_and_stores_none_twice() {
    let (_turn, b) = cluster();
    all_up(b);
    let config = config(b, 0);
    let p = mesh::producer(&config, None).await;
    let first = warm_up(&p, "fo.frozen").await;
    let leader = b.leaders("fo.frozen")[&first.partition];
    let stream = tokio::spawn(produce_stream(
        p.clone(),
        "fo.frozen",
        4,
        300,
        Duration::from_millis(40),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = b.pause_node(leader);
    tokio::time::sleep(Duration::from_secs(20)).await;
    frozen.resume();
    let sent = stream.await.unwrap();
    assert_rode_out(b, "fo.frozen", &sent, "leader freeze");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_group_coordinator_loses_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (_turn, b) = cluster();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, "fo.coordinator".into());
    let group = "fo-coordinator";
    let (consumer, seen, _) = mesh::recording_consumer(
        &config,
        mesh::options(group),
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let (stop, task) = mesh::spawn(consumer);
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let mut sent = BTreeSet::new();
    for i in 0..100u64 {
        let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
        sent.insert((d.partition, d.offset));
    }
    assert!(
        mesh::wait_for(Duration::from_secs(60), || seen.lock().unwrap().len()
            >= 100)
        .await,
        "the consumer did not start"
    );
    let coordinator = b.coordinator(group);
    b.kill_node(coordinator);
    eprintln!("coordinator {coordinator} killed");
    for i in 100..300u64 {
        let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
        sent.insert((d.partition, d.offset));
    }
    let all = mesh::wait_for(Duration::from_secs(90), || {
        let got: BTreeSet<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect();
        sent.is_subset(&got)
    })
    .await;
    let new_coordinator = b.coordinator(group);
    assert_ne!(new_coordinator, coordinator);
    if !all {
        let got: BTreeSet<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect();
        let missing: Vec<_> = sent.difference(&got).collect();
        panic!(
            "records were lost after the coordinator died: {} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    // Commits reach the end through the new coordinator.
    let (committed, ends) =
        mesh::commits_reach_end(b, group, "fo.coordinator", Duration::from_secs(30)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        committed,
        "commits stopped short: {:?} vs {ends:?}",
        b.committed(group)
    );
    let handled = seen.lock().unwrap().len();
    eprintln!("coordinator kill: {} sent, {handled} handled (redeliveries {}), coordinator {coordinator} -> {new_coordinator}", sent.len(), handled - sent.len());
    b.restart_node(coordinator);
}

/// Sends `range` signed anomalies, 64 in flight at a time; returns where each landed.
async fn send_anomalies(ai: &Arc<Producer>, range: std::ops::Range<u64>) -> BTreeSet<(i32, i64)> {
    let mut landed = BTreeSet::new();
    let mut sends = tokio::task::JoinSet::new();
    for i in range {
        if sends.len() >= 64 {
            landed.insert(sends.join_next().await.unwrap().unwrap());
        }
        let ai = ai.clone();
        sends.spawn(async move {
            let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
            (d.partition, d.offset)
        });
    }
    while let Some(r) = sends.join_next().await {
        landed.insert(r.unwrap());
    }
    landed
}

/// SPEC 3e: the coordinator frozen for 20 s (longer than the commit interval and the session)
/// while a group consumes. Commits are lost and the member loses its partitions, so records
/// it already handled come again at the same partition and offset: each is a redelivery,
/// skipped and counted, never handled twice and never dead-lettered as `replayed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_group_coordinator_redelivers_records_and_none_is_called_a_replay() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (_turn, b) = cluster();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, "fo.paused".into());
    let group = "fo-paused";
    let metrics = meshbus::metrics::Metrics::new();
    let handled: mesh::Seen = Arc::default();
    let recorded = handled.clone();
    let consumer = meshbus::consumer::Consumer::connect(
        config.clone(),
        mesh::verifier(&v),
        metrics.clone(),
        mesh::options(group),
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, move |r: meshbus::consumer::Consumed| {
        let recorded = recorded.clone();
        async move {
            // Slow enough that the freeze lands while records flow.
            tokio::time::sleep(Duration::from_millis(4)).await;
            recorded
                .lock()
                .unwrap()
                .push((r.topic, r.partition, r.offset));
            Ok(())
        }
    });
    let stats = consumer.stats();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let mut sent = send_anomalies(&ai, 0..3000).await;
    let (stop, task) = mesh::spawn(consumer);
    assert!(
        mesh::wait_for(Duration::from_secs(90), || handled.lock().unwrap().len()
            >= 300)
        .await,
        "the consumer did not start"
    );
    let coordinator = b.coordinator(group);
    let frozen = b.pause_node(coordinator);
    let paused_at = Instant::now();
    eprintln!("coordinator {coordinator} frozen");
    // Longer than the 200 ms commit interval and the 6 s session: commits are lost.
    tokio::time::sleep(Duration::from_secs(20)).await;
    frozen.resume();
    eprintln!(
        "coordinator {coordinator} resumed after {:?}",
        paused_at.elapsed()
    );
    sent.extend(send_anomalies(&ai, 3000..3300).await);
    let got = |h: &mesh::Seen| -> BTreeSet<(i32, i64)> {
        h.lock().unwrap().iter().map(|(_, p, o)| (*p, *o)).collect()
    };
    let all = mesh::wait_for(Duration::from_secs(240), || sent.is_subset(&got(&handled))).await;
    let (committed, ends) =
        mesh::commits_reach_end(b, group, "fo.paused", Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let handled = handled.lock().unwrap().clone();
    let received = stats.received.load(std::sync::atomic::Ordering::Relaxed);
    let redelivered = stats.redelivered.load(std::sync::atomic::Ordering::Relaxed);
    let (_, handled_count, rejected, _, dead) = stats.snapshot();
    let scrape = metrics.encode();
    eprintln!(
        "coordinator freeze: {} sent, {} handled, {received} received, {redelivered} redelivered, {rejected} rejected, {dead} dead-lettered",
        sent.len(),
        handled.len()
    );
    let members = member_ids(b, group);
    eprintln!(
        "coordinator freeze: {} member id(s) in the brokers' logs: {members:?}",
        members.len()
    );
    assert!(
        all,
        "records were not handled after the freeze: {} of {}",
        got_len(&handled, &sent),
        sent.len()
    );
    assert_eq!(
        members.len(),
        1,
        "the process held more than one member id: {}",
        member_lines(b, &members)
    );
    let distinct: BTreeSet<_> = handled.iter().collect();
    assert_eq!(distinct.len(), handled.len(), "a record was handled twice");
    assert_eq!(
        handled.len(),
        sent.len(),
        "handled records that were not sent"
    );
    assert_eq!(
        (rejected, dead),
        (0, 0),
        "redeliveries were refused or dead-lettered"
    );
    assert!(!scrape.contains("reason=\"replayed\""), "{scrape}");
    // Every record fetched was handled once or skipped as a redelivery, and the metric says so.
    assert_eq!(received, handled_count + redelivered);
    assert!(
        redelivered > 0,
        "the freeze lost no commit: the test did not exercise redelivery"
    );
    assert!(
        scrape.contains(&format!(
            "kafka_messages_redelivered_total{{topic=\"fo.paused\"}} {redelivered}"
        )),
        "{scrape}"
    );
    assert!(
        committed,
        "commits stopped short: {:?} vs {ends:?}",
        b.committed(group)
    );
}

/// Issue 19: the group coordinator frozen (SIGSTOP) for 20 s while a caught-up group waits
/// for records, then moved back by a preferred-leader election. The member rejoins with the
/// id the coordinator still holds (no ghost member the rebalance waits for), so records sent
/// after the freeze are all handled within the session timeout + 10 s of its end, and the
/// move back keeps the member id: one member id in every node's log for the whole test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_frozen_coordinator_the_member_is_back_within_a_session_with_one_member_id() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (_turn, b) = cluster();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, "fo.rejoin".into());
    let group = "fo-rejoin";
    let options = mesh::options(group);
    let session = options.timing.session_timeout;
    let target = session + Duration::from_secs(10);
    // When each (partition, offset) was first handled.
    let first: Arc<Mutex<BTreeMap<(i32, i64), Instant>>> = Arc::default();
    let stamped = first.clone();
    let consumer = meshbus::consumer::Consumer::connect(
        config.clone(),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        options,
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, move |r: meshbus::consumer::Consumed| {
        let stamped = stamped.clone();
        async move {
            stamped
                .lock()
                .unwrap()
                .entry((r.partition, r.offset))
                .or_insert_with(Instant::now);
            Ok(())
        }
    });
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let (stop, task) = mesh::spawn(consumer);
    // Caught up before the fault: what is measured afterwards is the rejoin, not a backlog.
    let before = send_anomalies(&ai, 0..200).await;
    assert!(
        handled_all(&first, &before, Duration::from_secs(90)).await,
        "the consumer did not start"
    );

    let coordinator = b.coordinator(group);
    let frozen = b.pause_node(coordinator);
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    frozen.resume();
    let fault_end = Instant::now();
    eprintln!(
        "coordinator {coordinator} frozen for {:?}",
        paused_at.elapsed()
    );
    let after = send_anomalies(&ai, 200..500).await;
    let acked = fault_end.elapsed();
    let all = handled_all(&first, &after, Duration::from_secs(240)).await;
    let recovery = last_first_handling(&first, &after, fault_end);
    let members = member_ids(b, group);
    eprintln!(
        "coordinator freeze: records sent after it acknowledged {acked:?} and all handled {recovery:?} after its end (target {target:?}); {} member id(s) in the brokers' logs: {members:?}",
        members.len()
    );
    assert!(all, "records sent after the freeze were not all handled");
    let recovery = recovery.unwrap();
    assert!(
        recovery <= target,
        "records sent after the freeze were handled {recovery:?} after its end; the target is the session ({session:?}) + 10 s"
    );
    assert_eq!(
        members.len(),
        1,
        "more than one member id after the freeze: {}",
        member_lines(b, &members)
    );

    // The periodic preferred-leader rebalance moves the coordinator back; done here at once.
    let interim = b.coordinator(group);
    let back = elect_preferred_coordinator(b, group, coordinator).await;
    eprintln!("coordinator moved back: {interim} -> {back}");
    assert_eq!(
        back, coordinator,
        "the election did not move the coordinator back"
    );
    let moved_at = Instant::now();
    let later = send_anomalies(&ai, 500..600).await;
    let all_later = handled_all(&first, &later, Duration::from_secs(120)).await;
    let after_move = last_first_handling(&first, &later, moved_at);
    let members = member_ids(b, group);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    eprintln!(
        "coordinator move back to {back}: records sent after it all handled {after_move:?} after it; {} member id(s) in the brokers' logs: {members:?}",
        members.len()
    );
    assert!(
        all_later,
        "records sent after the coordinator moved were not all handled"
    );
    assert!(after_move.unwrap() <= target);
    assert_eq!(
        members.len(),
        1,
        "the coordinator move cost a member id: {}",
        member_lines(b, &members)
    );
}

/// Waits up to `limit` until every record of `sent` was handled.
async fn handled_all(
    first: &Arc<Mutex<BTreeMap<(i32, i64), Instant>>>,
    sent: &BTreeSet<(i32, i64)>,
    limit: Duration,
) -> bool {
    mesh::wait_for(limit, || {
        let f = first.lock().unwrap();
        sent.iter().all(|k| f.contains_key(k))
    })
    .await
}

/// From `since` to the first handling of the last of `sent` to be handled (`None` while one
/// is not).
fn last_first_handling(
    first: &Arc<Mutex<BTreeMap<(i32, i64), Instant>>>,
    sent: &BTreeSet<(i32, i64)>,
    since: Instant,
) -> Option<Duration> {
    let f = first.lock().unwrap();
    sent.iter()
        .map(|k| f.get(k).map(|t| t.saturating_duration_since(since)))
        .collect::<Option<Vec<_>>>()
        .and_then(|d| d.into_iter().max())
}

/// Runs preferred-leader elections of `__consumer_offsets` until `node` coordinates `group`
/// again (it must first be back in the ISR) or 60 s pass; returns the coordinator then.
async fn elect_preferred_coordinator(b: &Broker, group: &str, node: i32) -> i32 {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        b.admin(&["elect-preferred", "__consumer_offsets"]);
        let now = b.coordinator(group);
        if now == node || Instant::now() > end {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The lines of every node's log that name one of `members`, for a failure message.
fn member_lines(b: &Broker, members: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for n in b.nodes() {
        for line in b
            .log(n.id)
            .lines()
            .filter(|l| members.iter().any(|m| l.contains(m.as_str())))
        {
            out.push_str(&format!("\nnode {}: {line}", n.id));
        }
    }
    out
}

/// The member ids of `group` that any node's log names (Kafka's member ids are the client id,
/// `meshbus-node-<n>`, a dash and a UUID).
fn member_ids(b: &Broker, group: &str) -> BTreeSet<String> {
    const PREFIX: &str = "meshbus-node-";
    let mut ids = BTreeSet::new();
    for n in b.nodes() {
        for line in b.log(n.id).lines().filter(|l| l.contains(group)) {
            let mut rest = line;
            while let Some(at) = rest.find(PREFIX) {
                let tail = &rest[at + PREFIX.len()..];
                let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
                let uuid = tail.get(digits + 1..digits + 37);
                if digits > 0
                    && tail.as_bytes().get(digits) == Some(&b'-')
                    && uuid.is_some_and(|u| {
                        u.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
                            && u.bytes().filter(|&c| c == b'-').count() == 4
                    })
                {
                    ids.insert(format!("{PREFIX}{}", &tail[..digits + 37]));
                }
                rest = &tail[digits..];
            }
        }
    }
    ids
}

fn got_len(handled: &[(String, i32, i64)], sent: &BTreeSet<(i32, i64)>) -> usize {
    handled
        .iter()
        .filter(|(_, p, o)| sent.contains(&(*p, *o)))
        .map(|(_, p, o)| (*p, *o))
        .collect::<BTreeSet<_>>()
        .len()
}

/// Sends one record with task 0's key, so connections and metadata exist before the clock
/// starts; returns where it landed (the partition task 0 writes to).
async fn warm_up(p: &Producer, topic: &str) -> meshbus::producer::Delivery {
    p.send_raw(
        topic,
        Some(b"key-0".to_vec()),
        b"warm-up".to_vec(),
        BTreeMap::new(),
    )
    .await
    .unwrap()
}

/// Runs preferred-leader elections until `preferred` leads `partition` (it must first be back
/// in the ISR) or 60 s pass; returns the leader then.
async fn elect_preferred(b: &Broker, topic: &str, partition: i32, preferred: i32) -> i32 {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        b.admin(&["elect-preferred", topic]);
        let leader = b.leaders(topic)[&partition];
        if leader == preferred || Instant::now() > end {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_leader_is_followed_through_fresh_metadata() {
    let (_turn, b) = cluster();
    all_up(b);
    let config = config(b, 5);
    let p = mesh::producer(&config, None).await;
    let first = warm_up(&p, "fo.moved").await;
    // The preferred leader is the first replica; put leadership there first (earlier tests may
    // have moved it).
    let preferred = b.admin(&["replicas", "fo.moved"])[first.partition.to_string()][0]
        .as_i64()
        .unwrap() as i32;
    elect_preferred(b, "fo.moved", first.partition, preferred).await;
    assert_eq!(b.leaders("fo.moved")[&first.partition], preferred);
    let stream = tokio::spawn(produce_stream(
        p.clone(),
        "fo.moved",
        3,
        250,
        Duration::from_millis(30),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A broker restart moves leadership away; a preferred-leader election moves it back.
    b.restart_node(preferred);
    let away = b.leaders("fo.moved")[&first.partition];
    let back = elect_preferred(b, "fo.moved", first.partition, preferred).await;
    let sent = stream.await.unwrap();
    eprintln!(
        "leader of partition {}: {preferred} -> {away} -> {back}",
        first.partition
    );
    assert_eq!(back, preferred, "the preferred leader did not come back");
    let failed: Vec<_> = sent.iter().filter(|s| s.landed.is_err()).collect();
    assert!(
        failed.is_empty(),
        "sends failed across leader moves: {failed:?}"
    );
    let (ok, _, _) = check_log(b, "fo.moved", &sent);
    assert_eq!(ok, sent.len());
    // Records sent after the move landed at the preferred leader again: the producer follows
    // metadata instead of retrying the old leader.
    let d = p
        .send_raw(
            "fo.moved",
            Some(b"key-0".to_vec()),
            b"after".to_vec(),
            BTreeMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(d.partition, first.partition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restart_loses_nothing_acknowledged() {
    let (_turn, b) = cluster();
    all_up(b);
    let config = config(b, 8);
    let p = mesh::producer(&config, None).await;
    let stream = tokio::spawn(produce_stream(
        p.clone(),
        "fo.restart",
        3,
        200,
        Duration::from_millis(40),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every node at once, storage kept.
    let nodes = b.nodes();
    for n in &nodes {
        b.kill_node(n.id);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart: Vec<_> = nodes
        .iter()
        .map(|n| {
            let id = n.id;
            let b: &'static Broker = b;
            std::thread::spawn(move || b.restart_node(id))
        })
        .collect();
    for t in restart {
        t.join().unwrap();
    }
    let sent = stream.await.unwrap();
    let (ok, failed, in_log) = check_log(b, "fo.restart", &sent);
    eprintln!("cluster restart: {ok} acknowledged, {failed} failed, {in_log} in the log");
    assert!(ok > 0 && in_log >= ok);
    // Sends work again once the cluster is back.
    p.send_raw("fo.restart", None, b"after".to_vec(), BTreeMap::new())
        .await
        .unwrap();
}
