//! The clients users run, against one Apache Kafka broker: meshbus, librdkafka
//! (confluent-kafka), the Java client (kafka-clients 4.4.0) and Sarama (the deployed CyberMesh
//! backend's client). They read each other's signed records byte for byte, and share one
//! consumer group: partitions split among the four, every record handled by exactly one member
//! while membership is stable, and the offsets one member committed are where the next starts.

mod common;
use common::broker::{Broker, Member, Peer};
use common::mesh::{self, Seen};
use common::sample;
use common::vectors;
use meshbus::contract::{Kind, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PEERS: [Peer; 3] = [Peer::Librdkafka, Peer::Java, Peer::Sarama];

/// `n` anomalies signed by `signer` (one signer per test: its nonces never repeat).
fn signed_anomalies(signer: &meshbus::contract::Signer, from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            signer
                .sign_message(Message::Anomaly(sample::anomaly(i, 300)))
                .encode()
        })
        .collect()
}

fn partitions_of(seen: &Seen) -> BTreeSet<(i32, i64)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, p, o)| (*p, *o))
        .collect()
}

/// Signed records meshbus produces are read by each peer with identical bytes and verify;
/// records each peer produces (valid and tampered) are verified or dead-lettered by meshbus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_read_meshbus_records_and_meshbus_verifies_theirs() {
    let b = Broker::start(&["interop.out", "interop.in", "interop.dlq"]);
    let v = vectors::load();
    let config = b.config();

    // meshbus -> peers.
    let raw = mesh::producer(&config, None).await;
    let signer = mesh::ai_signer(&v);
    let mut sent = BTreeSet::new();
    for value in signed_anomalies(&signer, 0, 12) {
        raw.send_raw("interop.out", None, value.clone(), BTreeMap::new())
            .await
            .unwrap();
        sent.insert(value);
    }
    for peer in PEERS {
        let rows = tokio::task::block_in_place(|| b.peer_read(peer, "interop.out", sent.len()));
        let got: BTreeSet<Vec<u8>> = rows
            .iter()
            .map(|r| hex::decode(r["value"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(got, sent, "{peer:?} read different bytes");
        // A verifier of its own per peer: the replay guard would refuse a second copy.
        let verifier = mesh::verifier(&v);
        for value in &got {
            verifier
                .verify(Kind::Anomaly, value)
                .unwrap_or_else(|e| panic!("{peer:?}'s copy does not verify: {e}"));
        }
    }

    // peers -> meshbus: each peer sends 4 valid records and one with a forged signature.
    let mut expected_valid = 0;
    for (n, peer) in PEERS.iter().enumerate() {
        let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> =
            signed_anomalies(&signer, 100 * (n as u64 + 1), 4)
                .into_iter()
                .map(|v| (None, v))
                .collect();
        let mut forged = signed_anomalies(&signer, 100 * (n as u64 + 1) + 50, 1).remove(0);
        let l = forged.len();
        // The signature is field 12, near the end; flip a byte inside it.
        forged[l - 80] ^= 0x01;
        records.push((None, forged));
        expected_valid += 4;
        tokio::task::block_in_place(|| b.peer_produce(*peer, "interop.in", &records));
    }
    let mut config_in = config.clone();
    config_in.topics.insert(Kind::Anomaly, "interop.in".into());
    config_in.dlq_topic = "interop.dlq".into();
    let (consumer, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config_in),
        "interop-in",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let stats = consumer.stats();
    let (stop, task) = mesh::spawn(consumer);
    let done = mesh::wait_for(Duration::from_secs(60), || {
        let meshbus::consumer::StatsSnapshot { received, .. } = stats.snapshot();
        received >= (expected_valid + PEERS.len()) as u64
    })
    .await;
    assert!(done, "meshbus did not receive every peer's records");
    assert!(
        mesh::wait_for(Duration::from_secs(30), || stats.snapshot().dead_lettered
            == PEERS.len() as u64)
        .await,
        "dead letters: {:?}",
        stats.snapshot()
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(seen.lock().unwrap().len(), expected_valid);
    let letters = b.py_read("interop.dlq", PEERS.len());
    for l in letters {
        assert_eq!(l["headers"]["reason"], hex::encode("bad_signature"));
    }
}

/// meshbus, librdkafka, the Java client and Sarama in one group on one 8-partition topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_share_one_group_and_resume_from_each_others_commits() {
    let b = Broker::start(&[]);
    b.create_topics(8, &[], &["interop.group"]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, "interop.group".into());
    let group = "interop-four";

    let (seen, _, (stop, task)) = mesh::running_anomaly_consumer(&config, group, &v).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut members: Vec<Member> = PEERS
        .iter()
        .map(|p| b.member(*p, "interop.group", group, 75))
        .collect();
    // Membership is stable once every peer holds partitions and no new assignment came for 6 s.
    let mut last = (0, std::time::Instant::now());
    let stable = mesh::wait_for(Duration::from_secs(60), || {
        let n: usize = members.iter().map(Member::assignments).sum();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
        members
            .iter()
            .all(|m| m.assigned().is_some_and(|a| !a.is_empty()))
            && last.1.elapsed() > Duration::from_secs(6)
    })
    .await;
    assert!(
        stable,
        "the group did not settle: {:?}",
        members
            .iter()
            .map(|m| (m.client, m.assigned()))
            .collect::<Vec<_>>()
    );
    let peer_parts: BTreeSet<i32> = members.iter().flat_map(|m| m.assigned().unwrap()).collect();
    assert!(peer_parts.len() < 8, "meshbus got no partition");

    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let mut sent = BTreeSet::new();
    for i in 0..80u64 {
        let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
        sent.insert((d.partition, d.offset));
    }
    let all_handled = mesh::wait_for(Duration::from_secs(60), || {
        let mut n = partitions_of(&seen).len();
        for m in &members {
            n += m.records().len();
        }
        n >= sent.len()
    })
    .await;
    assert!(all_handled, "not every record was handled");
    // Exactly one member handled each record.
    let mut by_record: BTreeMap<(i32, i64), Vec<String>> = BTreeMap::new();
    for r in seen.lock().unwrap().iter() {
        by_record
            .entry((r.1, r.2))
            .or_default()
            .push("meshbus".into());
    }
    for m in &members {
        for r in m.records() {
            by_record
                .entry(r)
                .or_default()
                .push(format!("{:?}", m.client));
        }
        assert!(!m.records().is_empty(), "{:?} handled nothing", m.client);
    }
    assert!(!seen.lock().unwrap().is_empty(), "meshbus handled nothing");
    assert_eq!(by_record.keys().cloned().collect::<BTreeSet<_>>(), sent);
    for (r, who) in &by_record {
        assert_eq!(who.len(), 1, "{r:?} handled by {who:?}");
    }

    // Every member committed what it handled (each commits after each record).
    let (committed, ends) =
        mesh::commits_reach_end(&b, group, "interop.group", Duration::from_secs(20)).await;
    assert!(
        committed,
        "commits did not reach the end: {:?} vs {ends:?}",
        b.committed(group)
    );

    // The peers crash (SIGKILL); meshbus takes every partition once their sessions expire and
    // starts where each peer committed: it handles the new records and none of the old ones.
    for m in &mut members {
        m.kill_now();
    }
    let before = partitions_of(&seen);
    let mut more = BTreeSet::new();
    for i in 100..140u64 {
        let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
        more.insert((d.partition, d.offset));
    }
    let took_over = mesh::wait_for(Duration::from_secs(60), || {
        more.is_subset(&partitions_of(&seen))
    })
    .await;
    assert!(took_over, "meshbus did not take the peers' partitions over");
    let again: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p, o)| (*p, *o))
        .filter(|r| sent.contains(r) && !before.contains(r))
        .collect();
    assert!(
        again.is_empty(),
        "records the peers had committed came again: {again:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // And a Java member alone in the group starts at meshbus's commits: only new records.
    let mut java = b.member(Peer::Java, "interop.group", group, 25);
    assert!(
        mesh::wait_for(Duration::from_secs(20), || java
            .assigned()
            .is_some_and(|a| a.len() == 8))
        .await,
        "the Java member did not get the partitions"
    );
    let mut last_batch = BTreeSet::new();
    for i in 200..210u64 {
        let d = ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
        last_batch.insert((d.partition, d.offset));
    }
    tokio::task::block_in_place(|| java.wait());
    let got: BTreeSet<_> = java.records().into_iter().collect();
    assert_eq!(
        got, last_batch,
        "the Java member did not start at meshbus's commits"
    );
}
