//! Broker faults on a three-node Apache Kafka cluster (each node broker + controller,
//! replication 3, min.insync.replicas 2), each applied while records flow and judged by the
//! checker (tests/common/checker.rs), which reads the topics back and counts every record:
//! kill -9 of the partition leader while producing; the leader frozen (SIGSTOP) for 20 s, cut
//! off from the other nodes for 30 s, and half-partitioned for 30 s with SPEC 5's breaker
//! (no send fails within the delivery timeout, none is stored twice, the breaker refuses
//! nothing); kill -9 of the group coordinator while consuming; the coordinator frozen for 20 s
//! and cut off for 30 s while consuming (redeliveries are not replays, each record handled
//! once, commits at the log end, new records handled within session + 10 s of the heal; a
//! caught-up member is back within a session of a freeze's end, with one member id, or two
//! when finding the new coordinator outlasted the session, and keeps it when the coordinator
//! moves back); a member process frozen past its session; a
//! leader moved by restart and preferred-leader election; and a whole-cluster restart. One
//! cluster serves the tests one after another (each on its own topic and group); a test that
//! stops, freezes or cuts nodes undoes it before it ends (the fault guards undo it on a panic).

// Each test holds the cluster turn (a std mutex) for its whole run, on its own runtime:
// that is the point, so holding it across awaits is intended.
#![allow(clippy::await_holding_lock)]

mod common;
use common::broker::Broker;
use common::checker::{self, ProduceReport, Sent};
use common::mesh;
use common::sample;
use common::vectors;
use meshbus::contract::Kind;
use meshbus::producer::Producer;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const TOPICS: [&str; 11] = [
    "fo.leader",
    "fo.frozen",
    "fo.cut",
    "fo.halfcut",
    "fo.cutcoord",
    "fo.member",
    "fo.coordinator",
    "fo.paused",
    "fo.moved",
    "fo.restart",
    "fo.rejoin",
];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// The session timeout of `mesh::quick`.
const SESSION: Duration = mesh::QUICK_SESSION;

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
    c.producer = {
        let mut p = c.producer;
        p.max_retries = max_retries;
        p.retry_backoff = Duration::from_millis(200);
        p.retry_backoff_max = Duration::from_secs(2);
        p.breaker_failures = 1_000;
        p
    };
    c
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
                out.push(Sent::of(value(task, seq), started, &r));
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

/// The checker's produce report for `topic` (one warm-up record besides the run's), after
/// checking that each task's acknowledged records are in send order within their partition
/// (the idempotent producer's ordering).
fn check_log(b: &Broker, topic: &str, sent: &[Sent]) -> ProduceReport {
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut acked: Vec<&Sent> = sent.iter().filter(|s| s.landed.is_ok()).collect();
    acked.sort_by_key(|s| s.landed.clone().unwrap());
    for s in acked {
        let (_, o) = s.landed.clone().unwrap();
        let v = String::from_utf8_lossy(&s.value);
        let (task, seq) = v.split_once("-seq-").unwrap();
        if let Some((prev_o, prev_seq)) = last.get(task) {
            assert!(
                o > *prev_o && seq > prev_seq.as_str(),
                "{task} out of order: {seq} at {o} after {prev_seq} at {prev_o}"
            );
        }
        last.insert(task.to_string(), (o, seq.to_string()));
    }
    checker::check_produce(b, topic, sent, 1)
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
fn assert_rode_out(b: &Broker, topic: &str, sent: &[Sent], fault: &str) -> ProduceReport {
    let report = check_log(b, topic, sent);
    checker::row(fault, Some(&report), None);
    report.assert_rode_out(fault);
    report
}

/// Which node a fault strikes, and how.
#[derive(Clone, Copy, Debug)]
enum NodeFault {
    /// SIGSTOP: the node keeps its sockets and answers nothing.
    Freeze,
    /// Cut off from the other nodes (inter-broker and controller traffic both ways).
    Cut,
    /// A half partition: the others cannot reach it; its own connections to them stay up.
    CutOneWay,
}

fn apply(b: &Broker, node: i32, fault: NodeFault) -> common::broker::Fault<'_> {
    match fault {
        NodeFault::Freeze => b.pause_node(node),
        NodeFault::Cut => b.cut_node(node),
        NodeFault::CutOneWay => b.cut_node_one_way(node),
    }
}

/// Four senders stream `per_task` records each to `topic` while `fault` strikes the leader
/// of task 0's partition for `length`; returns the checker's report (already printed).
async fn produce_through(
    b: &'static Broker,
    config: &meshbus::config::Config,
    topic: &'static str,
    fault: NodeFault,
    length: Duration,
    name: &str,
) -> (ProduceReport, Arc<Producer>) {
    common::logs();
    all_up(b);
    let p = mesh::producer(config, None).await;
    let first = warm_up(&p, topic).await;
    let leader = b.leaders(topic)[&first.partition];
    let stream = tokio::spawn(produce_stream(
        p.clone(),
        topic,
        4,
        750,
        Duration::from_millis(30),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on = apply(b, leader, fault);
    eprintln!("{name}: node {leader} ({fault:?}) for {length:?}");
    tokio::time::sleep(length).await;
    on.end();
    let sent = stream.await.unwrap();
    (assert_rode_out(b, topic, &sent, name), p)
}

/// SPEC 8: the partition leader frozen (SIGSTOP) for 20 s while four senders produce. Its
/// connections stay open and answer nothing; leadership moves once the controller fences it.
/// Within the delivery timeout the client retries the same idempotent batches: no send fails,
/// no record is stored twice, every acknowledged record is at its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_partition_leader_fails_no_send_and_stores_none_twice() {
    let (_turn, b) = cluster();
    let config = config(b, 0);
    let name = "leader SIGSTOP 20 s";
    produce_through(
        b,
        &config,
        "fo.frozen",
        NodeFault::Freeze,
        Duration::from_secs(20),
        name,
    )
    .await;
}

/// The partition leader cut off from the other two nodes for 30 s (its replication, quorum
/// and broker heartbeats dropped; clients still reach it): the controller fences it and
/// leadership moves, while the old leader still takes requests it cannot replicate. Within
/// the delivery timeout no send fails and none is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_cut_off_for_30s_fails_no_send_and_stores_none_twice() {
    let (_turn, b) = cluster();
    let config = config(b, 0);
    let name = "leader cut off 30 s";
    produce_through(
        b,
        &config,
        "fo.cut",
        NodeFault::Cut,
        Duration::from_secs(30),
        name,
    )
    .await;
}

/// A half partition for 30 s: the other nodes cannot reach the leader while its own
/// connections to them stay up. With SPEC 5's breaker thresholds (not the other tests' high
/// ones) the breaker counts only sends that failed for good, so it refuses nothing: no send
/// fails, and it is closed after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_partition_of_the_leader_opens_no_breaker_and_fails_no_send() {
    let (_turn, b) = cluster();
    let mut config = config(b, 0);
    let defaults = meshbus::config::Config::default().producer;
    config.producer.breaker_failures = defaults.breaker_failures;
    config.producer.breaker_open_for = defaults.breaker_open_for;
    config.producer.breaker_successes = defaults.breaker_successes;
    let name = "leader half partition 30 s";
    let (report, p) = produce_through(
        b,
        &config,
        "fo.halfcut",
        NodeFault::CutOneWay,
        Duration::from_secs(30),
        name,
    )
    .await;
    assert_eq!(report.failed.get("breaker_open"), None);
    assert_eq!(p.breaker_state(), meshbus::producer::BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_group_coordinator_loses_nothing() {
    common::logs();
    let (_turn, b) = cluster();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, "fo.coordinator".into());
    let group = "fo-coordinator";
    let (seen, _, (stop, task)) = mesh::running_anomaly_consumer(&config, group, &v).await;
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
    common::logs();
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
        mesh::quick(&config),
        mesh::verifier(&v),
        metrics.clone(),
        group,
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
    let received = stats.snapshot().received;
    let redelivered = stats.snapshot().redelivered;
    let meshbus::consumer::StatsSnapshot {
        handled: handled_count,
        rejected,
        dead_lettered: dead,
        ..
    } = stats.snapshot();
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
    let now = Instant::now();
    let handles: Vec<checker::Handle> = handled
        .iter()
        .map(|(_, p, o)| checker::Handle {
            member: 0,
            partition: *p,
            offset: *o,
            began: now,
            ended: now,
        })
        .collect();
    let report = checker::check_consume(b, "fo.paused", &config.dlq_topic, group, &handles, None);
    checker::row(
        &format!("coordinator SIGSTOP 20 s ({redelivered} redelivered, skipped)"),
        None,
        Some(&report),
    );
    report.assert_exactly_once("coordinator freeze");
    assert!(
        all,
        "records were not handled after the freeze: {} of {}",
        got_len(&handled, &sent),
        sent.len()
    );
    // One member id, or two when finding the new coordinator took longer than the 6 s session
    // (on a loaded machine the request to the frozen node waits out its 8 s timeout first), so
    // the new coordinator expired the member and it registered again: the same rule, and the
    // same reason, as the caught-up member's freeze below. Never a ghost: the old id expired
    // before the new one joined, and every record was still handled exactly once (above).
    assert!(
        members.len() <= 2,
        "the process held more than two member ids: {}",
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
async fn after_a_frozen_coordinator_the_member_is_back_within_a_session_and_leaves_no_ghost() {
    common::logs();
    let (_turn, b) = cluster();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, "fo.rejoin".into());
    let group = "fo-rejoin";
    let session = SESSION;
    let target = session + Duration::from_secs(10);
    // When each (partition, offset) was first handled.
    let first: Arc<Mutex<BTreeMap<(i32, i64), Instant>>> = Arc::default();
    let stamped = first.clone();
    let consumer = meshbus::consumer::Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        group,
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

    // The coordinator is the preferred replica first (earlier tests may have moved it), so the
    // election after the freeze has somewhere to move it back to.
    let preferred = preferred_coordinator(b, group);
    let coordinator = elect_preferred_coordinator(b, group, preferred).await;
    assert_eq!(
        coordinator, preferred,
        "the coordinator is not the preferred replica"
    );
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
    // One member id, or two when finding the new coordinator took longer than the test's 6 s
    // session (a FindCoordinator sent to the frozen node waits out its request timeout), so the
    // new coordinator expired the member and it had to register again. Never a ghost: the old
    // id is gone before the new one joins, or the recovery above could not hold.
    assert!(
        members.len() <= 2,
        "more than two member ids after the freeze: {}",
        member_lines(b, &members)
    );
    let ids_after_freeze = members.len();

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
        ids_after_freeze,
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
/// The preferred replica (the first) of the `__consumer_offsets` partition that holds `group`:
/// Kafka's `abs(group.hashCode()) % partitions`, with Java's string hash.
fn preferred_coordinator(b: &Broker, group: &str) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let replicas = b.admin(&["replicas", "__consumer_offsets"]);
    let partitions = replicas.as_object().unwrap().len() as i32;
    // Kafka's Utils.abs: MIN_VALUE maps to 0.
    let partition = hash.checked_abs().unwrap_or(0) % partitions;
    replicas[partition.to_string()][0].as_i64().unwrap() as i32
}

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
    let report = check_log(b, "fo.moved", &sent);
    checker::row("leader moved by restart and election", Some(&report), None);
    assert_eq!(report.acked, sent.len());
    assert_eq!((report.duplicates, report.acked_missing), (0, 0));
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
    let report = check_log(b, "fo.restart", &sent);
    checker::row("whole-cluster restart", Some(&report), None);
    assert!(report.acked > 0);
    assert_eq!((report.duplicates, report.acked_missing), (0, 0));
    // Sends work again once the cluster is back.
    p.send_raw("fo.restart", None, b"after".to_vec(), BTreeMap::new())
        .await
        .unwrap();
}

/// A group consumes 600 signed anomalies, then ten a second while `fault` strikes the group
/// coordinator for `length`; then 300 more are sent.
/// Returns the checker's report, with the recovery measured from the fault's end to the
/// handling of every record sent after it, and the consumer's counters.
async fn consume_through(
    b: &'static Broker,
    topic: &'static str,
    group: &'static str,
    fault: NodeFault,
    length: Duration,
    name: &str,
) -> (checker::ConsumeReport, Arc<meshbus::consumer::Stats>) {
    common::logs();
    all_up(b);
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, topic.into());
    let metrics = meshbus::metrics::Metrics::new();
    let handles: checker::Handles = Arc::default();
    let consumer = meshbus::consumer::Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        metrics.clone(),
        group,
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, checker::recorder(&handles, 0));
    let stats = consumer.stats();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let mut sent = send_anomalies(&ai, 0..600).await;
    let (stop, task) = mesh::spawn(consumer);
    let handled = checker::places;
    // Caught up first, so the recovery below measures the consumer, not a backlog.
    assert!(
        mesh::wait_for(Duration::from_secs(90), || sent
            .is_subset(&handled(&handles)))
        .await,
        "the consumer did not start"
    );
    assert!(
        mesh::commits_reach_end(b, group, topic, Duration::from_secs(60))
            .await
            .0
    );
    // Records keep flowing through the fault: ten a second.
    let flowing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let trickle = {
        let (ai, flowing) = (ai.clone(), flowing.clone());
        tokio::spawn(async move {
            let mut landed = BTreeSet::new();
            let mut n = 10_000;
            while flowing.load(std::sync::atomic::Ordering::Relaxed) {
                let d = ai.send_anomaly(sample::anomaly(n, 200)).await.unwrap();
                landed.insert((d.partition, d.offset));
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            landed
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let coordinator = b.coordinator(group);
    let on = apply(b, coordinator, fault);
    let struck = Instant::now();
    eprintln!("{name}: coordinator {coordinator} ({fault:?}) for {length:?}");
    tokio::time::sleep(length).await;
    on.end();
    let ended = Instant::now();
    tracing::info!("TEST: {name}: fault ended");
    flowing.store(false, std::sync::atomic::Ordering::Relaxed);
    sent.extend(trickle.await.unwrap());
    let after = send_anomalies(&ai, 3000..3300).await;
    sent.extend(after.iter().copied());
    let all = mesh::wait_for(Duration::from_secs(240), || {
        sent.is_subset(&handled(&handles))
    })
    .await;
    let (_committed, _ends) =
        mesh::commits_reach_end(b, group, topic, Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let report = checker::check_consume(
        b,
        topic,
        &config.dlq_topic,
        group,
        &handles.lock().unwrap(),
        Some((ended, &after)),
    );
    checker::row(name, None, Some(&report));
    eprintln!(
        "{name}: handlings per 2 s from the fault's start: {}",
        checker::timeline(&handles.lock().unwrap(), struck, Duration::from_secs(2))
    );
    assert!(all, "{name}: records sent were not all handled: {report:?}");
    assert!(!metrics.encode().contains("reason=\"replayed\""));
    (report, stats)
}

/// The group coordinator cut off from the other two nodes for 30 s while a group consumes:
/// every record is handled exactly once (redeliveries skipped, none called a replay), commits
/// reach the log end, and records sent after the heal are handled within the session timeout
/// + 10 s of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_coordinator_cut_off_for_30s_hands_over_and_handles_each_record_once() {
    let (_turn, b) = cluster();
    let name = "coordinator cut off 30 s";
    let (report, _) = consume_through(
        b,
        "fo.cutcoord",
        "fo-cutcoord",
        NodeFault::Cut,
        Duration::from_secs(30),
        name,
    )
    .await;
    report.assert_exactly_once(name);
    report.assert_recovered_within(SESSION + Duration::from_secs(10), name);
    // One member id, or two: while the cut-off node still answers the member's heartbeats
    // (it cannot learn that it was fenced), the new coordinator expires the member's session,
    // and a dynamic member the coordinator removed can only join under a new id (the old one
    // is left with LeaveGroup first, krafka change 8). Never more: no ghost holds a rebalance.
    let ids = member_ids(b, "fo-cutcoord");
    eprintln!("{name}: member ids in the brokers' logs: {ids:?}");
    assert!(
        ids.len() <= 2,
        "the process registered more than two members: {ids:?}"
    );
}

/// The child validator of `a_member_process_frozen_past_its_session_...`
/// (tests/common/child.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a failover test; the test starts it"]
async fn child_validator() {
    common::child::run_if_child().await;
}

/// A member process frozen (SIGSTOP) for twice its session timeout in a group of two: the
/// other member takes its partitions and handles what arrives meanwhile; once resumed, the
/// frozen member handles and commits nothing of what it lost, rejoins, and handles its share
/// of what comes next. Every record is handled exactly once, none by both at once, and the
/// commits reach the log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_process_frozen_past_its_session_rejoins_and_handles_each_record_once() {
    let (_turn, b) = cluster();
    all_up(b);
    let (topic, group, name) = ("fo.member", "fo-member", "member process SIGSTOP 12 s");
    let v = vectors::load();
    let mut config = config(b, 5);
    config.topics.insert(Kind::Anomaly, topic.into());
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = common::child::Child::start(
        b,
        "child_validator",
        group,
        topic,
        0,
        &dir.path().join("a.stderr"),
    );
    let mut sent = send_anomalies(&ai, 0..300).await;
    let handled_by = checker::places;
    assert!(
        mesh::wait_for(Duration::from_secs(90), || sent
            .is_subset(&handled_by(&a.handles)))
        .await,
        "the first member did not handle the first records"
    );
    // The second member joins; the partitions are shared once the group is stable.
    let b_handles: checker::Handles = Arc::default();
    let member_b = meshbus::consumer::Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        group,
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, checker::recorder(&b_handles, 1));
    let b_stats = member_b.stats();
    let (stop_b, task_b) = mesh::spawn(member_b);
    assert!(
        mesh::wait_for(Duration::from_secs(60), || {
            b_stats.snapshot().assignments > 0
        })
        .await,
        "the second member got no assignment"
    );
    assert!(
        mesh::commits_reach_end(b, group, topic, Duration::from_secs(60))
            .await
            .0
    );
    a.freeze();
    let frozen_at = Instant::now();
    let during = send_anomalies(&ai, 300..600).await;
    sent.extend(during.iter().copied());
    tokio::time::sleep((SESSION * 2).saturating_sub(frozen_at.elapsed())).await;
    a.resume();
    let resumed = Instant::now();
    eprintln!("{name}: resumed after {:?}", frozen_at.elapsed());
    // What came while A was frozen is B's to handle (A's session expired).
    assert!(
        mesh::wait_for(Duration::from_secs(90), || {
            let all: BTreeSet<_> = handled_by(&a.handles)
                .union(&handled_by(&b_handles))
                .copied()
                .collect();
            during.is_subset(&all)
        })
        .await,
        "records sent during the freeze were not handled"
    );
    // A rejoins: new records go to both members again. When A's rejoin completes is not
    // visible from here, and records sent before it are all B's (B holds every partition
    // until then, and commits them when it gives A its share): so records come in rounds
    // of 99 (33 a partition) until A handles one of them, at most 12 rounds.
    let mut after = BTreeSet::new();
    let mut a_after = false;
    for round in 0..12u64 {
        let first = 600 + round * 99;
        let batch = send_anomalies(&ai, first..first + 99).await;
        sent.extend(batch.iter().copied());
        after.extend(batch);
        a_after = mesh::wait_for(Duration::from_secs(10), || {
            a.handles
                .lock()
                .unwrap()
                .iter()
                .any(|h| h.began > resumed && after.contains(&(h.partition, h.offset)))
        })
        .await;
        if a_after {
            eprintln!("{name}: the resumed member handled new records in round {round}");
            break;
        }
    }
    let rejoined = a_after
        && mesh::wait_for(Duration::from_secs(120), || {
            let all: BTreeSet<_> = handled_by(&a.handles)
                .union(&handled_by(&b_handles))
                .copied()
                .collect();
            sent.is_subset(&all)
        })
        .await;
    let (committed, _) = mesh::commits_reach_end(b, group, topic, Duration::from_secs(60)).await;
    stop_b.send(()).unwrap();
    task_b.await.unwrap().unwrap();
    let status = a.stop();
    let mut handles = a.handles.lock().unwrap().clone();
    handles.extend(b_handles.lock().unwrap().iter().cloned());
    let report = checker::check_consume(
        b,
        topic,
        &config.dlq_topic,
        group,
        &handles,
        Some((resumed, &after)),
    );
    checker::row(name, None, Some(&report));
    let a_lost: Vec<_> = a
        .handles
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.began > frozen_at && during.contains(&(h.partition, h.offset)))
        .map(|h| (h.partition, h.offset))
        .collect();
    assert!(
        a_lost.is_empty(),
        "the resumed member handled records it had lost: {a_lost:?}"
    );
    assert!(
        rejoined,
        "the resumed member did not rejoin and handle new records: {report:?}"
    );
    assert!(committed, "commits stopped short: {report:?}");
    report.assert_exactly_once(name);
    assert!(status.success(), "the child validator failed: {status:?}");
}
