//! The command's JSON logs: every record-level line carries its coordinates and reason code,
//! and no secret (SASL password, key material) ever reaches them.

mod common;
use common::mesh::{self};
use common::sample;
use common::vectors;
use meshbus::contract::Kind;
use std::collections::BTreeMap;

use common::broker::shared as broker;

#[test]
fn json_logs_carry_record_coordinates_and_reason_codes_and_no_secret() {
    use common::cli::{meshbus, run, text};
    let b = broker();
    let topic = "ops.logs";
    b.create_topics(1, &[], &[topic, "ops.logs.dlq"]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let signer = meshbus::contract::Signer::new(
            vectors::seed(&v.keys.ai_producer_seed_hex),
            0,
            Default::default(),
        );
        let p = mesh::producer(&config, None).await;
        for i in 0..4u64 {
            let mut bytes = signer
                .sign_message(meshbus::contract::Message::Anomaly(sample::anomaly(i, 100)))
                .encode();
            if i == 2 {
                let n = bytes.len();
                bytes[n - 40] ^= 1; // in the signature
            }
            p.send_raw(topic, None, bytes, BTreeMap::new())
                .await
                .unwrap();
        }
    });
    let out = run(meshbus()
        .envs(b.env())
        .env("KAFKA_TOPIC_ANOMALY", topic)
        .env("KAFKA_DLQ_TOPIC", "ops.logs.dlq")
        .env("MESHBUS_LOG_FORMAT", "json")
        .args([
            "--log", "info", "consume", "--kind", "anomaly", "--group", "ops-logs",
        ])
        .args(["--max", "4", "--seconds", "60"]));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(logs.len() >= 3, "{err}");
    assert!(logs
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let find = |message: &str| {
        logs.iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` line in {err}"))
    };
    for message in ["record rejected", "record dead-lettered"] {
        let l = &find(message)["fields"];
        assert_eq!(l["reason"], "bad_signature", "{l}");
        assert_eq!(l["topic"], topic, "{l}");
        assert_eq!(
            (l["partition"].as_i64(), l["offset"].as_i64()),
            (Some(0), Some(2)),
            "{l}"
        );
    }
    let (user, password) = b.scram512();
    assert!(
        !err.contains(&password),
        "the SASL password reached the log"
    );
    assert!(
        !err.contains(&v.keys.ai_producer_seed_hex),
        "key material reached the log"
    );
    assert!(err.contains(&user) || !err.contains(&password));
}
