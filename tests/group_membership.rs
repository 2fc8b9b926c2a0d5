//! Group membership the way a Kubernetes operator runs meshbus, on Apache Kafka (one shared
//! node): static membership (KIP-345), where a restarted member gets its partitions back
//! without a rebalance, and the KIP-848 group protocol shared with the Java client.

mod common;
use common::broker::{Broker, Peer};
use common::mesh::{self, wait_for};
use common::sample;
use common::vectors;
use meshbus::config::{Config, GroupProtocol};
use meshbus::contract::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::broker::shared as broker;

fn config_for(b: &Broker, topic: &str) -> Config {
    let mut c = b.config();
    c.topics.insert(Kind::Anomaly, topic.into());
    c.dlq_topic = format!("{topic}.dlq");
    b.create_topics(1, &[], &[&c.dlq_topic]);
    c
}

fn partitions(seen: &mesh::Seen) -> BTreeSet<i32> {
    seen.lock().unwrap().iter().map(|(_, p, _)| *p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_within_its_session_gets_its_partitions_back_without_a_rebalance()
{
    let b = broker();
    let topic = "ops.static";
    b.create_topics(4, &[], &[topic]);
    let v = vectors::load();
    let config = config_for(b, topic);
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    // A 15 s session: a static member restarted within it keeps its partitions.
    let member = |id: &str| {
        let mut c = mesh::quick(&config);
        c.consumer.session_timeout = Duration::from_secs(15);
        c.consumer.group_instance_id = Some(id.to_string());
        c
    };

    // B first (it leads the group), then A.
    let (cb, seen_b, _) = mesh::recording_consumer(
        &member("ops-b"),
        "ops-static",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let stats_b = cb.stats();
    let health_b = cb.health();
    let (stop_b, task_b) = mesh::spawn(cb);
    assert!(wait_for(Duration::from_secs(30), || health_b.joined()).await);
    let (ca, seen_a, _) = mesh::recording_consumer(
        &member("ops-a"),
        "ops-static",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let health_a = ca.health();
    let (stop_a, task_a) = mesh::spawn(ca);
    assert!(wait_for(Duration::from_secs(30), || health_a.joined()).await);
    for i in 0..40 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    let all_handled = |n: usize, seen: &[&mesh::Seen]| {
        seen.iter().map(|s| s.lock().unwrap().len()).sum::<usize>() >= n
    };
    assert!(
        wait_for(Duration::from_secs(30), || all_handled(
            40,
            &[&seen_a, &seen_b]
        ))
        .await,
        "first 40 not handled"
    );
    let (parts_a, parts_b) = (partitions(&seen_a), partitions(&seen_b));
    assert!(
        !parts_a.is_empty() && !parts_b.is_empty(),
        "{parts_a:?} {parts_b:?}"
    );
    assert!(parts_a.is_disjoint(&parts_b));
    let b_assignments = stats_b.snapshot().assignments;
    let b_revoked = stats_b.snapshot().revoked_partitions;

    // A stops (a static member sends no LeaveGroup) and comes back within the session.
    let _ = stop_a.send(());
    task_a.await.unwrap().unwrap();
    let (ca2, seen_a2, _) = mesh::recording_consumer(
        &member("ops-a"),
        "ops-static",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let health_a2 = ca2.health();
    let (stop_a2, task_a2) = mesh::spawn(ca2);
    assert!(wait_for(Duration::from_secs(30), || health_a2.joined()).await);
    for i in 40..80 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    let handled_before_b = seen_b.lock().unwrap().len();
    assert!(
        wait_for(Duration::from_secs(30), || all_handled(
            80,
            &[&seen_a, &seen_a2, &seen_b]
        ))
        .await,
        "the second 40 not handled"
    );
    let b_counts = (
        stats_b.snapshot().assignments,
        stats_b.snapshot().revoked_partitions,
    );
    let _ = stop_a2.send(());
    let _ = stop_b.send(());
    task_a2.await.unwrap().unwrap();
    task_b.await.unwrap().unwrap();

    // A's partitions came back to A; B was never rebalanced and kept its own.
    assert_eq!(partitions(&seen_a2), parts_a);
    let b_after: BTreeSet<i32> = seen_b.lock().unwrap()[handled_before_b..]
        .iter()
        .map(|(_, p, _)| *p)
        .collect();
    assert!(b_after.is_subset(&parts_b), "{b_after:?} vs {parts_b:?}");
    assert_eq!(
        b_counts,
        (b_assignments, b_revoked),
        "B went through a rebalance"
    );
    let mut all: Vec<_> = [&seen_a, &seen_a2, &seen_b]
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 80, "each record handled, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_members_share_a_group_with_java_without_stopping_each_other() {
    let b = broker();
    let topic = "ops.kip848";
    b.create_topics(6, &[], &[topic]);
    let v = vectors::load();
    let mut config = config_for(b, topic);
    config.consumer.group_protocol = GroupProtocol::Consumer;
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let raw = mesh::producer(&config, None).await;
    let group = "ops-kip848";

    let (c, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        group,
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let stats = c.stats();
    let health = c.health();
    let (stop, task) = mesh::spawn(c);
    assert!(wait_for(Duration::from_secs(30), || health.joined()).await);
    // Alone: 30 valid records and a forged one (DLQ, committed, as under the classic protocol).
    let mut valid = BTreeSet::new();
    for i in 0..30 {
        let d = ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
        valid.insert((d.partition, d.offset));
    }
    let mut forged = meshbus::contract::Signer::new(
        vectors::seed(&v.keys.ai_producer_seed_hex),
        0,
        Default::default(),
    )
    .sign_message(meshbus::contract::Message::Anomaly(sample::anomaly(
        99, 100,
    )))
    .encode();
    let n = forged.len();
    forged[n - 40] ^= 1;
    raw.send_raw(topic, None, forged, BTreeMap::new())
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            let meshbus::consumer::StatsSnapshot {
                handled,
                dead_lettered: dead,
                ..
            } = stats.snapshot();
            handled == 30 && dead == 1
        })
        .await,
        "{:?}",
        stats.snapshot()
    );
    let revoked_alone = stats.snapshot().revoked_partitions;

    // A Java member joins on the same protocol: it takes some partitions, meshbus keeps the
    // rest without giving them up (no eager revoke-everything round).
    let mut java = b.member_with(Peer::Java, topic, group, 25, &["--protocol", "consumer"]);
    assert!(
        wait_for(Duration::from_secs(40), || java
            .assigned()
            .is_some_and(|a| !a.is_empty()))
        .await,
        "the Java member got nothing: {:?}",
        java.lines()
    );
    let java_parts = java.assigned().unwrap();
    assert!(java_parts.len() < 6, "{java_parts:?}");
    assert!(
        wait_for(Duration::from_secs(20), || stats
            .snapshot()
            .revoked_partitions
            >= revoked_alone + java_parts.len() as u64)
        .await
    );
    let revoked_for_java = stats.snapshot().revoked_partitions - revoked_alone;
    assert_eq!(
        revoked_for_java,
        java_parts.len() as u64,
        "meshbus gave up more than what moved to Java"
    );
    let handled_before = seen.lock().unwrap().len();
    for i in 30..90 {
        let d = ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
        valid.insert((d.partition, d.offset));
    }
    // Java leaves when its time is up; meshbus takes its partitions back and handles the rest.
    java.wait();
    let java_records: BTreeSet<(i32, i64)> = java.records().into_iter().collect();
    assert!(!java_records.is_empty(), "Java handled nothing");
    let done = wait_for(Duration::from_secs(40), || {
        let mine: BTreeSet<(i32, i64)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect();
        mine.union(&java_records)
            .cloned()
            .collect::<BTreeSet<_>>()
            .len()
            == valid.len()
    })
    .await;
    let (reached, _) = mesh::commits_reach_end(b, group, topic, Duration::from_secs(30)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(done, "not every record was handled");
    assert!(reached, "{:?}", b.committed(group));
    let mine: Vec<(i32, i64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p, o)| (*p, *o))
        .collect();
    let mine_set: BTreeSet<_> = mine.iter().cloned().collect();
    assert_eq!(mine_set.len(), mine.len(), "meshbus handled a record twice");
    assert!(
        mine_set.is_disjoint(&java_records),
        "a record handled by both"
    );
    assert!(
        seen.lock().unwrap().len() > handled_before,
        "meshbus stopped after Java joined"
    );
    eprintln!(
        "kip848: meshbus handled {}, Java {} on {java_parts:?}; meshbus revoked {revoked_for_java} when Java joined",
        mine.len(),
        java_records.len()
    );
}
