//! The chaos soak, `scripts/chaos MINUTES` (the test command runs it for 3 minutes): a running
//! mesh on a three-node Apache Kafka cluster (replication 3, min.insync.replicas 2) while random
//! faults strike it one after another, then the checker's table, failing on any loss,
//! duplicate, failed send, false `replayed`, double handling or stuck partition.
//!
//! The mesh: an AI producer (two senders of signed anomalies), two validators (one consumer
//! group per validator node, so each sees every record: one in this process, one in a child
//! process of this test binary that a fault can freeze), and an enforcement agent that applies
//! the backend's signed policy updates and acknowledges each with a signed policy ack.
//! The faults, drawn at random (`MESHBUS_CHAOS_SEED` repeats a run): a node frozen (SIGSTOP),
//! cut off from the others, half-partitioned, or killed and restarted (the node drawn among the
//! anomaly partitions' leaders, the validators' coordinators and the rest), and the child
//! validator frozen past its session timeout.

mod common;
use common::broker::Broker;
use common::checker::{self, Handle, Handles, Sent};
use common::child::Child;
use common::mesh;
use common::sample;
use common::vectors;
use meshbus::contract::{Kind, Message};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ANOMALIES: &str = "chaos.anomalies";
const POLICIES: &str = "chaos.policy";
const ACKS: &str = "chaos.policy.ack";
const CHILD_GROUP: &str = "chaos-validator-b";
/// The session timeout of `mesh::quick`: the child is frozen for twice that.
const SESSION: Duration = mesh::QUICK_SESSION;

fn config(b: &Broker) -> meshbus::config::Config {
    let mut c = b.config();
    topics(&mut c);
    c
}

fn topics(c: &mut meshbus::config::Config) {
    c.topics.insert(Kind::Anomaly, ANOMALIES.into());
    c.topics.insert(Kind::PolicyUpdate, POLICIES.into());
    c.topics.insert(Kind::PolicyAck, ACKS.into());
}

/// A consumer of `group` for `kind` whose handler records each handling as member `member`
/// (and runs `then`, whose error fails the handling).
async fn member<F, Fut>(
    config: &meshbus::config::Config,
    group: &str,
    kind: Kind,
    member: usize,
    handles: Handles,
    then: F,
) -> mesh::Running
where
    F: Fn(meshbus::consumer::Consumed) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let v = vectors::load();
    let then = Arc::new(then);
    let c = meshbus::consumer::Consumer::connect(
        mesh::quick(config),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        group,
    )
    .await
    .expect("connect")
    .handle(kind, move |r: meshbus::consumer::Consumed| {
        let handles = handles.clone();
        let then = then.clone();
        async move {
            let began = Instant::now();
            let (p, o) = (r.partition, r.offset);
            then(r).await?;
            handles.lock().unwrap().push(Handle {
                member,
                partition: p,
                offset: o,
                began,
                ended: Instant::now(),
            });
            Ok(())
        }
    });
    mesh::spawn(c)
}

/// The child validator (tests/common/child.rs): chaos_soak starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the chaos soak's child validator; chaos_soak starts it"]
async fn child_validator() {
    common::child::run_if_child().await;
}

/// A small deterministic generator (xorshift), seeded from MESHBUS_CHAOS_SEED or the clock.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn secs(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_secs(from + self.below(to - from + 1))
    }
}

/// Starts every node that is not running.
fn all_up(b: &Broker) {
    for n in b.nodes() {
        if std::net::TcpStream::connect(("127.0.0.1", n.sasl_ssl)).is_err() {
            b.restart_node(n.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak: scripts/chaos MINUTES runs it (the test command for 3 minutes)"]
async fn chaos_soak() {
    let minutes: f64 = std::env::var("MESHBUS_CHAOS_MINUTES")
        .expect("MESHBUS_CHAOS_MINUTES (scripts/chaos MINUTES sets it)")
        .parse()
        .expect("MESHBUS_CHAOS_MINUTES is a number");
    let seed: u64 = std::env::var("MESHBUS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (common::child::unix_ms() as u64) | 1);
    eprintln!("chaos: {minutes} minute(s), MESHBUS_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let b: &'static Broker = Box::leak(Box::new(Broker::start_nodes(
        3,
        &[ANOMALIES, POLICIES, ACKS],
    )));
    let dir = tempfile::tempdir().unwrap();
    let config = config(b);
    let v = vectors::load();
    let ai_signer = mesh::ai_signer(&v);
    let control_signer = mesh::control_signer(&v);
    let ai = mesh::producer(&config, None).await;
    let backend = mesh::producer(&config, None).await;
    let agent_acks = mesh::producer(&config, Some(control_signer.clone())).await;

    // The validators and the agent.
    let validator_a: Handles = Arc::default();
    let (stop_a, task_a) = member(
        &config,
        "chaos-validator-a",
        Kind::Anomaly,
        0,
        validator_a.clone(),
        |_| async { Ok(()) },
    )
    .await;
    let mut child = Child::start(
        b,
        "child_validator",
        CHILD_GROUP,
        ANOMALIES,
        1,
        &dir.path().join("child.stderr"),
    );
    let agent: Handles = Arc::default();
    let acks: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let ack_log = acks.clone();
    let (stop_agent, task_agent) = member(
        &config,
        "chaos-agent",
        Kind::PolicyUpdate,
        2,
        agent.clone(),
        move |r| {
            let agent_acks = agent_acks.clone();
            let ack_log = ack_log.clone();
            async move {
                let Message::PolicyUpdate(u) = r.message else {
                    return Err("not a policy update".into());
                };
                let mut ack = sample::policy_ack(0, 0);
                ack.policy_id = u.policy_id.clone();
                let value = Message::PolicyAck(ack.clone()).encode();
                let started = Instant::now();
                let d = agent_acks.send_policy_ack(ack).await;
                ack_log.lock().unwrap().push(Sent::of(value, started, &d));
                d.map(|_| ()).map_err(|e| e.to_string())
            }
        },
    )
    .await;

    // The producers: two AI senders and the backend's policy updates, until `producing` ends.
    let producing = Arc::new(AtomicBool::new(true));
    let mut senders = Vec::new();
    for task in 0..2u64 {
        let (ai, signer, producing) = (ai.clone(), ai_signer.clone(), producing.clone());
        senders.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut n = task * 10_000_000;
            while producing.load(Ordering::Relaxed) {
                let signed = signer.sign_message(Message::Anomaly(sample::anomaly(n, 300)));
                let started = Instant::now();
                let d = ai.send_message(&signed).await;
                out.push(Sent::of(signed.encode(), started, &d));
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        }));
    }
    let policy_sender = {
        let (backend, signer, producing) =
            (backend.clone(), control_signer.clone(), producing.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut n = 0u64;
            while producing.load(Ordering::Relaxed) {
                let signed =
                    signer.sign_message(Message::PolicyUpdate(sample::policy_update(n, 200)));
                let started = Instant::now();
                let d = backend.send_message(&signed).await;
                out.push(Sent::of(signed.encode(), started, &d));
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        })
    };

    // The faults, one after another, until the time is up.
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut faults: Vec<String> = Vec::new();
    tokio::time::sleep(Duration::from_secs(5)).await;
    while Instant::now() < end {
        all_up(b);
        let candidates: BTreeSet<i32> = b
            .leaders(ANOMALIES)
            .values()
            .copied()
            .chain([
                b.coordinator("chaos-validator-a"),
                b.coordinator(CHILD_GROUP),
            ])
            .chain(b.nodes().iter().map(|n| n.id))
            .filter(|id| *id > 0)
            .collect();
        let candidates: Vec<i32> = candidates.into_iter().collect();
        let node = candidates[rng.below(candidates.len() as u64) as usize];
        let what = rng.below(5);
        let length = match what {
            0 => rng.secs(5, 20),
            1 | 2 => rng.secs(10, 30),
            3 => rng.secs(3, 15),
            _ => SESSION * 2,
        };
        let label = match what {
            0 => format!("node {node} frozen {length:?}"),
            1 => format!("node {node} cut off {length:?}"),
            2 => format!("node {node} half-partitioned {length:?}"),
            3 => format!("node {node} killed, restarted after {length:?}"),
            _ => format!("validator-b frozen {length:?}"),
        };
        eprintln!("chaos: {label}");
        faults.push(label);
        match what {
            0..=2 => {
                let on = match what {
                    0 => b.pause_node(node),
                    1 => b.cut_node(node),
                    _ => b.cut_node_one_way(node),
                };
                tokio::time::sleep(length).await;
                on.end();
            }
            3 => {
                b.kill_node(node);
                tokio::time::sleep(length).await;
                b.restart_node(node);
            }
            _ => {
                child.freeze();
                tokio::time::sleep(length).await;
                child.resume();
            }
        }
        // Let the cluster settle before the next fault: one fault at a time.
        tokio::time::sleep(rng.secs(5, 10)).await;
    }
    all_up(b);
    producing.store(false, Ordering::Relaxed);
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await.unwrap());
    }
    let policies = policy_sender.await.unwrap();

    // Everything acknowledged must be handled by every validator and the agent.
    let places = |s: &[Sent]| -> BTreeSet<(i32, i64)> {
        s.iter().filter_map(|s| s.landed.clone().ok()).collect()
    };
    let (anomalies, updates) = (places(&sent), places(&policies));
    let covers = |h: &Handles, want: &BTreeSet<(i32, i64)>| want.is_subset(&checker::places(h));
    let caught_up = mesh::wait_for(Duration::from_secs(300), || {
        covers(&validator_a, &anomalies)
            && covers(&child.handles, &anomalies)
            && covers(&agent, &updates)
    })
    .await;
    for (group, topic) in [
        ("chaos-validator-a", ANOMALIES),
        (CHILD_GROUP, ANOMALIES),
        ("chaos-agent", POLICIES),
    ] {
        mesh::commits_reach_end(b, group, topic, Duration::from_secs(120)).await;
    }
    stop_a.send(()).unwrap();
    stop_agent.send(()).unwrap();
    task_a.await.unwrap().unwrap();
    task_agent.await.unwrap().unwrap();
    child.stop();

    // The checker's table.
    let acks = acks.lock().unwrap().clone();
    let produce = checker::check_produce(b, ANOMALIES, &sent, 0);
    let produce_policies = checker::check_produce(b, POLICIES, &policies, 0);
    let produce_acks = checker::check_produce(b, ACKS, &acks, 0);
    let dlq = config.dlq_topic.clone();
    let consume_a = checker::check_consume(
        b,
        ANOMALIES,
        &dlq,
        "chaos-validator-a",
        &validator_a.lock().unwrap(),
        None,
    );
    let consume_b = checker::check_consume(
        b,
        ANOMALIES,
        &dlq,
        CHILD_GROUP,
        &child.handles.lock().unwrap(),
        None,
    );
    let consume_agent = checker::check_consume(
        b,
        POLICIES,
        &dlq,
        "chaos-agent",
        &agent.lock().unwrap(),
        None,
    );
    eprintln!("chaos: {} fault(s): {}", faults.len(), faults.join("; "));
    checker::row(
        "soak: AI producer -> validator A (in process)",
        Some(&produce),
        Some(&consume_a),
    );
    checker::row(
        "soak: AI producer -> validator B (child process)",
        Some(&produce),
        Some(&consume_b),
    );
    checker::row(
        "soak: backend policy updates -> agent",
        Some(&produce_policies),
        Some(&consume_agent),
    );
    checker::row("soak: agent's policy acks", Some(&produce_acks), None);
    assert!(
        caught_up,
        "the validators or the agent did not handle every acknowledged record"
    );
    for (name, p) in [
        ("anomalies", &produce),
        ("policy updates", &produce_policies),
        ("acks", &produce_acks),
    ] {
        p.assert_rode_out(name);
    }
    for (name, c) in [
        ("validator A", &consume_a),
        ("validator B", &consume_b),
        ("agent", &consume_agent),
    ] {
        c.assert_exactly_once(name);
    }
    // One ack per policy update, none twice.
    assert_eq!(
        produce_acks.acked,
        updates.len(),
        "the agent acknowledged {} of {} policy updates",
        produce_acks.acked,
        updates.len()
    );
}
