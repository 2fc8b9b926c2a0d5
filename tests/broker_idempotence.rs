//! Idempotent produce on Apache Kafka: a batch whose acknowledgement was lost is resent with
//! its sequence and stored once, and a producer whose id the broker expired (the broker then
//! answers UNKNOWN_PRODUCER_ID / OUT_OF_ORDER_SEQUENCE_NUMBER) recovers without losing or
//! doubling a record. The broker advertises a plaintext listener under a proxy's port; the
//! proxy (`common/proxy.rs`) swallows one Produce answer and cuts the connection.

mod common;
use common::broker::{free_port, Broker};
use common::proxy;
use meshbus::config::Config;
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn value(i: usize) -> Vec<u8> {
    format!("record-{i:04}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_and_an_expired_producer_id_store_each_record_once() {
    let advertised = free_port();
    let b = Broker::start_with(
        1,
        &["idem"],
        &[
            "--plain-advertise",
            &advertised.to_string(),
            "--config",
            "producer.id.expiration.ms=2000",
            "--config",
            "producer.id.expiration.check.interval.ms=500",
        ],
    );
    let proxy = proxy::start(advertised, b.plain_port()).await;
    let config = Config::builder()
        .brokers([format!("127.0.0.1:{advertised}")])
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut config = config;
    config.producer = {
        let mut p = config.producer;
        p.max_retries = 0;
        p
    };
    let client = Client::connect(&config).await.unwrap();
    let p = Producer::new(client, config.clone(), None, Metrics::new());
    let key = Some(b"one-partition".to_vec());

    // The 3rd Produce request's answer is lost: the broker has the batch, the client retries it.
    proxy.drop_produce_answer.store(3, Ordering::SeqCst);
    let mut landed = Vec::new();
    for i in 0..10 {
        let d = p
            .send_raw("idem", key.clone(), value(i), BTreeMap::new())
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        landed.push((d.partition, d.offset));
    }
    assert_eq!(
        proxy.dropped.load(Ordering::SeqCst),
        1,
        "no acknowledgement was lost"
    );
    assert!(
        proxy.produce_requests.load(Ordering::SeqCst) > 10,
        "the lost batch was not resent"
    );

    // The broker forgets the producer id; later sends must still land, once each.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 10..15 {
        let d = p
            .send_raw("idem", key.clone(), value(i), BTreeMap::new())
            .await
            .unwrap_or_else(|e| panic!("send {i} after expiry: {e}"));
        landed.push((d.partition, d.offset));
    }

    let total: i64 = b.end_offsets(&["idem"]).values().sum();
    let rows = b.py_read("idem", total as usize);
    let values: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| hex::decode(r["value"].as_str().unwrap()).unwrap())
        .collect();
    let expected: Vec<Vec<u8>> = (0..15).map(value).collect();
    assert_eq!(values, expected, "each record once, in order");
    let offsets: Vec<i64> = landed.iter().map(|l| l.1).collect();
    assert_eq!(offsets, (0..15).collect::<Vec<i64>>());
}
