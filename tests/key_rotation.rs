//! A producer switches its signing key while sends are going: none is dropped or fails, and
//! each record verifies under the key that signed it.

mod common;
use common::broker::{Broker, Peer};
use common::mesh::{self, wait_for};
use common::sample;
use common::vectors;
use meshbus::config::Config;
use meshbus::contract::Kind;
use std::collections::BTreeMap;
use std::time::Duration;

use common::broker::shared as broker;

fn config_for(b: &Broker, topic: &str) -> Config {
    let mut c = b.config();
    c.topics.insert(Kind::Anomaly, topic.into());
    c.dlq_topic = format!("{topic}.dlq");
    b.create_topics(1, &[], &[&c.dlq_topic]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_switches_its_signing_key_without_dropping_or_failing_a_send() {
    let b = broker();
    let topic = "ops.rotate";
    b.create_topics(3, &[], &[topic]);
    let v = vectors::load();
    let config = config_for(b, topic);
    let old = vectors::seed(&v.keys.ai_producer_seed_hex);
    let new = vectors::seed(&v.keys.other_seed_hex);
    let p = mesh::producer(
        &config,
        Some(std::sync::Arc::new(meshbus::contract::Signer::new(
            old.clone(),
            0,
            Default::default(),
        ))),
    )
    .await;
    let mut sends = tokio::task::JoinSet::new();
    let spawn = |sends: &mut tokio::task::JoinSet<_>, range: std::ops::Range<u64>| {
        for i in range {
            let q = p.clone();
            sends.spawn(async move { q.send_anomaly(sample::anomaly(i, 100)).await });
        }
    };
    // Half the sends go out, and the key changes while many of them are still in flight.
    spawn(&mut sends, 0..200);
    assert!(wait_for(Duration::from_secs(30), || p.counts().acknowledged >= 20).await);
    p.set_signer(meshbus::contract::Signer::new(
        new.clone(),
        0,
        Default::default(),
    ));
    spawn(&mut sends, 200..400);
    let mut ok = 0;
    while let Some(r) = sends.join_next().await {
        r.unwrap().expect("a send failed across the key switch");
        ok += 1;
    }
    assert_eq!(ok, 400);
    // Every record is in the log, signed by one of the two keys, and the new key signed some.
    let records = b.peer_read(Peer::Java, topic, 400);
    assert_eq!(records.len(), 400);
    let verifier = meshbus::contract::Verifier::new(Default::default(), Default::default());
    let mut by_key: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &records {
        let value = hex::decode(r["value"].as_str().unwrap()).unwrap();
        match verifier.verify(Kind::Anomaly, &value).unwrap() {
            meshbus::contract::Message::Anomaly(a) => {
                *by_key.entry(a.pubkey.to_vec()).or_default() += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(by_key.len(), 2, "both keys signed records");
    assert!(by_key.contains_key(new.verifying_key().to_bytes().as_slice()));
}
