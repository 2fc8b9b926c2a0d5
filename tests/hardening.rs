//! Issue 11's consumer hardening on Apache Kafka (one shared node): records the DLQ cannot hold
//! byte for byte are dead-lettered without their value (SPEC 7) instead of stalling the
//! partition, and a record whose handling stopped unfinished is handled by the next owner
//! instead of being refused as a replay.

mod common;
use common::broker::{Broker, Peer};
use common::mesh::{self, wait_for};
use common::vectors;
use meshbus::consumer::{Consumed, Consumer};
use meshbus::contract::{sample, Kind};
use meshbus::dlq::DeadLetter;
use meshbus::metrics::Metrics;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| Broker::start(&[]))
}

/// Every record of `topic` partition 0, read without a group.
async fn read_all(config: &meshbus::config::Config, topic: &str) -> Vec<meshbus::kafka::InRecord> {
    let client = meshbus::kafka::Client::connect(config).await.unwrap();
    let reader = client.reader().await.unwrap();
    let (start, end) = reader.watermarks(topic, 0).await.unwrap();
    let mut out = Vec::new();
    reader
        .scan(topic, 0, start, end, |r| out.push(r))
        .await
        .unwrap();
    reader.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_dlq_cannot_hold_are_dead_lettered_without_their_value_and_committed() {
    let b = broker();
    let (topic, dlq) = ("hard.big", "hard.small-dlq");
    // The topic takes records up to 3 MiB; the DLQ topic only up to 100 kB.
    b.create_topics(1, &["max.message.bytes=3145728"], &[topic]);
    b.create_topics(1, &["max.message.bytes=100000"], &[dlq]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = dlq.into();

    // Over the 1 MiB limit (written by librdkafka, which the topic allows), under the limit
    // but over what the DLQ topic takes, and small: three records that fail verification.
    let huge: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    // Incompressible, so the DLQ topic's 100 kB limit bites after snappy too.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let large: Vec<u8> = (0..600_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let small = vec![0xCD_u8; 5_000];
    b.peer_produce(
        Peer::Librdkafka,
        topic,
        &[(Some(b"k-huge".to_vec()), huge.clone())],
    );
    let raw = mesh::producer(&config, None).await;
    for value in [&large, &small] {
        raw.send_raw(topic, Some(b"k".to_vec()), value.clone(), BTreeMap::new())
            .await
            .unwrap();
    }
    // Then valid records: they must not wait behind the others.
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..5 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }

    let (consumer, seen, _) = mesh::recording_consumer(
        &config,
        mesh::options("hard-big"),
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let stats = consumer.stats();
    let (stop, task) = mesh::spawn(consumer);
    let done = wait_for(Duration::from_secs(60), || {
        let (_, handled, _, _, dead) = stats.snapshot();
        handled == 5 && dead == 3
    })
    .await;
    assert!(done, "stats {:?}", stats.snapshot());
    let (reached, _) = mesh::commits_reach_end(b, "hard-big", topic, Duration::from_secs(20)).await;
    assert!(
        reached,
        "commits did not reach the end: {:?}",
        b.committed("hard-big")
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 5);

    let letters: Vec<DeadLetter> = read_all(&config, dlq)
        .await
        .into_iter()
        .map(|r| DeadLetter::from_record(r.key, r.value, &r.headers).unwrap())
        .collect();
    assert_eq!(letters.len(), 3);
    let by_offset: BTreeMap<i64, &DeadLetter> =
        letters.iter().map(|l| (l.original_offset, l)).collect();
    for (offset, original) in [(0, &huge), (1, &large)] {
        let l = by_offset[&offset];
        assert!(l.value.is_none(), "offset {offset}: the value must be null");
        let o = l.omitted.as_ref().expect("value_omitted");
        assert_eq!(o.size, original.len() as u64);
        assert_eq!(o.sha256, hex::encode(Sha256::digest(original)));
        assert_eq!(l.original_topic, topic);
        assert_eq!(
            l.reason,
            if offset == 0 {
                "too_large"
            } else {
                "malformed"
            }
        );
    }
    assert_eq!(by_offset[&0].key.as_deref(), Some(&b"k-huge"[..]));
    let l = by_offset[&2];
    assert_eq!(
        l.value.as_deref(),
        Some(&small[..]),
        "a value that fits is kept byte for byte"
    );
    assert!(l.omitted.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_handling_stopped_unfinished_is_handled_by_the_next_owner() {
    let b = broker();
    let topic = "hard.redeliver";
    b.create_topics(1, &[], &[topic]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = "hard.redeliver-dlq".into();
    b.create_topics(1, &[], &["hard.redeliver-dlq"]);
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    ai.send_anomaly(sample::anomaly(1, 100)).await.unwrap();

    // One verifier for both members, as in one process whose partition moves away and back.
    let verifier = mesh::verifier(&v);
    let attempts = Arc::new(AtomicU64::new(0));
    let a = attempts.clone();
    let failing = Consumer::connect(
        config.clone(),
        verifier.clone(),
        Metrics::new(),
        mesh::options("hard-redeliver"),
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, move |_r: Consumed| {
        a.fetch_add(1, Ordering::SeqCst);
        async { Err("downstream unavailable".to_string()) }
    });
    let stats = failing.stats();
    let (stop, task) = mesh::spawn(failing);
    // Stop it mid-retry: the handler failed twice, its retries are not used up.
    assert!(
        wait_for(Duration::from_secs(30), || attempts.load(Ordering::SeqCst)
            >= 2)
        .await
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(stats.snapshot().4, 0, "nothing dead-lettered yet");

    let (next, seen, _) = mesh::recording_consumer(
        &config,
        mesh::options("hard-redeliver"),
        verifier.clone(),
        &[Kind::Anomaly],
    )
    .await;
    let next_stats = next.stats();
    let (stop, task) = mesh::spawn(next);
    let handled = wait_for(Duration::from_secs(30), || seen.lock().unwrap().len() == 1).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(
        handled,
        "the redelivered record was not handled: {:?}",
        next_stats.snapshot()
    );
    assert_eq!(next_stats.snapshot().2, 0, "refused (as replayed?)");
    // Now it was handled: a copy of it is a replay.
    let copy = read_all(&config, topic).await.remove(0);
    let again = verifier.verify(Kind::Anomaly, copy.value.as_deref().unwrap());
    assert_eq!(again.unwrap_err().reason.code(), "replayed");
}
