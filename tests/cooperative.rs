//! Cooperative-sticky rebalancing (KIP-429) across clients on Apache Kafka: meshbus, the Java
//! client, librdkafka and Sarama 1.61 in one group, all offering only `cooperative-sticky`.
//! Partitions move incrementally (meshbus gives up only what moves), every record is handled
//! exactly once while the membership is stable, and the commits carry across every move (no
//! record lost or handled twice from the first join to the last leave).

mod common;
use common::broker::{Broker, Member, Peer};
use common::mesh::{self, wait_for};
use common::sample;
use common::vectors;
use meshbus::config::Assignor;
use meshbus::contract::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: usize = 8;

/// (partition, offset) of every record handled by any member, with repeats.
fn handled(seen: &mesh::Seen, peers: &[&Member]) -> Vec<(i32, i64)> {
    let mut all: Vec<(i32, i64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p, o)| (*p, *o))
        .collect();
    for m in peers {
        all.extend(m.records());
    }
    all
}

fn repeats(all: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut count = BTreeMap::new();
    for r in all {
        *count.entry(*r).or_insert(0u32) += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(r, _)| r)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshbus_java_librdkafka_and_sarama_share_a_cooperative_sticky_group() {
    common::logs();
    let b = Broker::start(&[]);
    let v = vectors::load();
    let topic = "coop.anomalies";
    b.create_topics(PARTITIONS as u32, &[], &[topic, "coop.dlq"]);
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = "coop.dlq".into();
    let group = "coop-mixed";
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;

    // meshbus alone first: it holds all eight partitions.
    let mut cooperative = mesh::quick(&config);
    cooperative.consumer.assignors = vec![Assignor::CooperativeSticky];
    let (c, seen, _) =
        mesh::recording_consumer(&cooperative, group, mesh::verifier(&v), &[Kind::Anomaly]).await;
    let (stats, offsets) = (c.stats(), c.offsets());
    let (stop, task) = mesh::spawn(c);
    assert!(
        wait_for(Duration::from_secs(60), || offsets.progress().len()
            == PARTITIONS)
        .await,
        "meshbus alone holds {:?}",
        offsets.progress().keys()
    );

    // Records keep coming while the others join, one at a time.
    let sent: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (ai, sent, sending) = (ai.clone(), sent.clone(), sending.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while sending.load(Ordering::SeqCst) {
                let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
                sent.lock().unwrap().push((d.partition, d.offset));
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };
    let strategy = ["--strategy", "cooperative-sticky"];
    let mut members: Vec<Member> = Vec::new();
    for peer in [Peer::Java, Peer::Librdkafka, Peer::Sarama] {
        let m = b.member_with(peer, topic, group, 150, &strategy);
        assert!(
            wait_for(Duration::from_secs(60), || m
                .assigned()
                .is_some_and(|a| !a.is_empty()))
            .await,
            "{peer:?} got no partition: {:?}",
            m.lines()
        );
        members.push(m);
    }
    // Stable: four members, the eight partitions split between them, none held twice.
    let peers = || members.iter().collect::<Vec<_>>();
    let layout = || {
        let mut held: Vec<BTreeSet<i32>> = vec![offsets.progress().keys().map(|tp| tp.1).collect()];
        held.extend(
            members
                .iter()
                .map(|m| m.assigned().unwrap_or_default().into_iter().collect()),
        );
        held
    };
    let settled = |held: &[BTreeSet<i32>]| {
        held.iter().all(|h| !h.is_empty())
            && held.iter().map(BTreeSet::len).sum::<usize>() == PARTITIONS
            && held.iter().flatten().collect::<BTreeSet<_>>().len() == PARTITIONS
    };
    assert!(
        wait_for(Duration::from_secs(60), || settled(&layout())).await,
        "no stable split: {:?}\n{}",
        layout(),
        members
            .iter()
            .map(|m| format!(
                "{:?}: {:?}",
                m.client,
                m.lines()
                    .into_iter()
                    .filter(|l| l.get("offset").is_none())
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    sending.store(false, Ordering::SeqCst);
    let moving = sender.await.unwrap();
    let before = layout();
    let mine = before[0].len() as u64;
    // Incremental: meshbus gave up exactly the partitions that moved, once each; an eager
    // assignor would have revoked all it held at each of the three joins.
    assert_eq!(
        stats.snapshot().revoked_partitions,
        PARTITIONS as u64 - mine,
        "meshbus holds {:?} after the joins",
        before[0]
    );

    // While the membership is stable, every record is handled exactly once.
    let mut stable = BTreeSet::new();
    for i in 0..200 {
        let d = ai
            .send_anomaly(sample::anomaly(1_000_000 + i, 200))
            .await
            .unwrap();
        stable.insert((d.partition, d.offset));
    }
    assert!(
        wait_for(Duration::from_secs(60), || {
            let all: BTreeSet<_> = handled(&seen, &peers()).into_iter().collect();
            stable.is_subset(&all)
        })
        .await,
        "stable-phase records not all handled"
    );
    assert_eq!(
        layout(),
        before,
        "the membership changed during the stable phase"
    );
    let all = handled(&seen, &peers());
    let stable_counts: Vec<usize> = stable
        .iter()
        .map(|r| all.iter().filter(|h| *h == r).count())
        .collect();
    assert!(
        stable_counts.iter().all(|n| *n == 1),
        "handled more than once while stable"
    );

    // The peers leave when their time is up; meshbus takes everything back and handles the
    // records sent meanwhile from the commits the others left.
    let mut late = BTreeSet::new();
    for i in 0..100 {
        let d = ai
            .send_anomaly(sample::anomaly(2_000_000 + i, 200))
            .await
            .unwrap();
        late.insert((d.partition, d.offset));
    }
    for m in &mut members {
        m.wait();
    }
    let everything: BTreeSet<(i32, i64)> = sent
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .chain(stable.iter().cloned())
        .chain(late.iter().cloned())
        .collect();
    assert!(
        wait_for(Duration::from_secs(90), || {
            let all: BTreeSet<_> = handled(&seen, &members.iter().collect::<Vec<_>>())
                .into_iter()
                .collect();
            everything.is_subset(&all) && offsets.progress().len() == PARTITIONS
        })
        .await,
        "after the peers left: {} of {} handled, meshbus holds {:?}",
        handled(&seen, &members.iter().collect::<Vec<_>>())
            .into_iter()
            .collect::<BTreeSet<_>>()
            .len(),
        everything.len(),
        offsets.progress().keys()
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let all = handled(&seen, &members.iter().collect::<Vec<_>>());
    let by_client: Vec<(String, usize)> =
        std::iter::once(("meshbus".to_string(), seen.lock().unwrap().len()))
            .chain(
                members
                    .iter()
                    .map(|m| (format!("{:?}", m.client), m.records().len())),
            )
            .collect();
    eprintln!(
        "cooperative-sticky: {} records ({moving} while members joined), handled by {by_client:?}",
        everything.len()
    );
    for (client, n) in &by_client {
        assert!(*n > 0, "{client} handled nothing");
    }
    // Commits carried across every move: nothing handled twice, nothing beyond what was sent.
    assert_eq!(
        repeats(&all),
        vec![],
        "records handled twice across the moves"
    );
    assert_eq!(all.len(), everything.len());
}
