//! The verifying group consumer against a real broker (nisshi, TLS + SCRAM): verification before
//! handling, SPEC 7 dead letters, commits, groups shared with librdkafka, per-node groups,
//! crashes and broker restarts.

mod common;
use common::broker::Broker;
use common::mesh::{self, Seen};
use common::vectors;
use meshbus::contract::{sample, Kind};
use meshbus::dlq::DeadLetter;
use meshbus::protocol::{offsets, Cluster};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::oneshot;

const ALL: [Kind; 8] = Kind::ALL;

/// Starts `consumer.run` in a task; dropping or sending on the returned sender stops it.
fn spawn(
    consumer: meshbus::consumer::Consumer,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), meshbus::consumer::ConsumeError>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run(async move {
        let _ = rx.await;
    }));
    (tx, task)
}

/// Sends `n` signed anomalies; returns their (partition, offset).
async fn send_anomalies(
    p: &meshbus::producer::Producer,
    from: u64,
    n: u64,
) -> BTreeSet<(String, i32, i64)> {
    let mut out = BTreeSet::new();
    for i in from..from + n {
        let d = p.send_anomaly(sample::anomaly(i, 256)).await.unwrap();
        out.insert((d.topic, d.partition, d.offset));
    }
    out
}

/// High watermark of every partition of `topic` (via rskafka's list offsets).
async fn end_offsets(
    config: &meshbus::config::Config,
    topic: &str,
) -> BTreeMap<(String, i32), i64> {
    let t = meshbus::transport::Transport::connect(config)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for p in 0..3 {
        let c = t
            .client()
            .partition_client(
                topic,
                p,
                rskafka::client::partition::UnknownTopicHandling::Error,
            )
            .await
            .unwrap();
        let o = c
            .get_offset(rskafka::client::partition::OffsetAt::Latest)
            .await
            .unwrap();
        out.insert((topic.to_string(), p), o);
    }
    out
}

async fn committed(
    config: &meshbus::config::Config,
    group: &str,
    tps: &[(String, i32)],
) -> BTreeMap<(String, i32), i64> {
    let c = Cluster::new(config).unwrap();
    let conn = c.bootstrap().await.unwrap();
    let addr = meshbus::protocol::group::find_coordinator(&conn, group)
        .await
        .unwrap();
    let coord = c.connect(&addr).await.unwrap();
    offsets::fetch(&coord, group, tps).await.unwrap()
}

fn handled_set(seen: &Seen) -> Vec<(String, i32, i64)> {
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_stream_valid_handled_once_invalid_dead_lettered_and_committed() {
    let b = Broker::start(&[]);
    let v = vectors::load();
    let config = b.config();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let backend = mesh::producer(&config, Some(mesh::control_signer(&v))).await;
    let raw = mesh::producer(&config, None).await;

    // Valid records, freshly signed on the vectors' clock.
    let mut valid = send_anomalies(&ai, 0, 20).await;
    for i in 0..5u64 {
        for d in [
            ai.send_evidence(sample::evidence(100 + i, 200))
                .await
                .unwrap(),
            ai.send_policy(sample::policy(200 + i, 200)).await.unwrap(),
            backend
                .send_commit(sample::commit(300 + i as i64, 50))
                .await
                .unwrap(),
            backend
                .send_policy_update(sample::policy_update(400 + i, 100))
                .await
                .unwrap(),
            backend
                .send_reputation(sample::reputation(500 + i, 20))
                .await
                .unwrap(),
            backend
                .send_evidence_request(sample::evidence_request(600 + i, 20))
                .await
                .unwrap(),
        ] {
            valid.insert((d.topic, d.partition, d.offset));
        }
    }
    // Every invalid vector, byte for byte, to its topic; expected reason from the vector file.
    let mut invalid: BTreeMap<(String, i32, i64), (String, Vec<u8>)> = BTreeMap::new();
    for vec in v.vectors.iter().filter(|x| x.expect != "ok") {
        let value = hex::decode(&vec.record_hex).unwrap();
        if value.len() > meshbus::contract::limits::MAX_RECORD_BYTES {
            continue; // the producer refuses it before sending (tested elsewhere)
        }
        let d = raw
            .send_raw(&vec.topic, None, value.clone(), BTreeMap::new())
            .await
            .unwrap();
        invalid.insert(
            (d.topic, d.partition, d.offset),
            (vec.expect.clone(), value),
        );
    }
    assert!(
        invalid.len() >= 30,
        "vectors have {} invalid cases",
        invalid.len()
    );

    let (consumer, seen, metrics) =
        mesh::recording_consumer(&config, mesh::options("mixed"), mesh::verifier(&v), &ALL).await;
    let stats = consumer.stats();
    let (stop, task) = spawn(consumer);
    let total = (valid.len() + invalid.len()) as u64;
    let done = mesh::wait_for(Duration::from_secs(90), || {
        let (_, handled, _, _, dead) = stats.snapshot();
        handled + dead >= total
    })
    .await;
    assert!(done, "stats after 90 s: {:?} of {total}", stats.snapshot());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Every valid record handled exactly once.
    let handled = handled_set(&seen);
    let unique: BTreeSet<_> = handled.iter().cloned().collect();
    assert_eq!(unique.len(), handled.len(), "a record was handled twice");
    assert_eq!(unique, valid);

    // Every invalid record in the DLQ with the vector's reason, value unchanged (read by
    // librdkafka).
    let dlq = b.py_read("ai.dlq.v1", invalid.len());
    assert_eq!(dlq.len(), invalid.len());
    let mut found = BTreeMap::new();
    for row in &dlq {
        let headers: BTreeMap<String, Vec<u8>> = row["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), hex::decode(v.as_str().unwrap()).unwrap()))
            .collect();
        let value = hex::decode(row["value"].as_str().unwrap()).unwrap();
        let d = DeadLetter::from_record(None, value, &headers).unwrap();
        assert_eq!(d.node_id, "0");
        assert!(d.failed_at_ms > 1_700_000_000_000);
        found.insert(
            (
                d.original_topic.clone(),
                d.original_partition,
                d.original_offset,
            ),
            (d.reason.clone(), d.value.clone()),
        );
    }
    assert_eq!(found, invalid);

    // Committed offsets reached the end of every partition of every topic.
    for kind in ALL {
        let ends = end_offsets(&config, kind.default_topic()).await;
        let tps: Vec<_> = ends.keys().cloned().collect();
        let got = committed(&config, "mixed", &tps).await;
        for (tp, end) in ends {
            if end > 0 {
                assert_eq!(got.get(&tp), Some(&end), "{tp:?}");
            }
        }
    }
    // Metrics: per-reason rejections and DLQ counts add up.
    let text = metrics.encode();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("kafka_messages_rejected_total{") as usize,
        invalid.len()
    );
    assert_eq!(sum("kafka_dlq_messages_total{") as usize, invalid.len());
    assert_eq!(sum("kafka_messages_processed_total{") as usize, valid.len());
    assert!(text.contains("kafka_consumer_lag{"));
}
