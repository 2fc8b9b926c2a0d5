//! The configuration's tests: defaults, overrides, guards and errors naming variables.

use super::*;
use std::collections::HashMap;

#[test]
fn contract_settings_come_from_the_environment() {
    let key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[5; 32])
            .verifying_key()
            .to_bytes(),
    );
    let env: std::collections::HashMap<&str, String> = [
        (
            "CONTROL_POLICY_SIGNING_DOMAIN",
            "control.policy.v2".to_string(),
        ),
        ("KAFKA_MAX_TIMESTAMP_SKEW", "120".into()),
        ("CONTROL_TIMESTAMP_SKEW", "30".into()),
        ("AI_POLICY_ALLOWED_PUBKEYS", format!(" {key} ,")),
    ]
    .into_iter()
    .collect();
    let c = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(
        c.signing_domains.for_kind(Kind::PolicyUpdate),
        b"control.policy.v2"
    );
    assert_eq!(
        c.signing_domains.for_kind(Kind::Commit),
        b"control.commits.v1"
    );
    let vc = c.verifier_config();
    assert_eq!(
        (vc.ai_skew_secs, vc.control_skew_secs, vc.replay_window_secs),
        (120, 30, 240)
    );
    assert_eq!(vc.policy_allowlist.unwrap().len(), 1);
    assert_eq!(
        vc.domains.for_kind(Kind::PolicyUpdate),
        b"control.policy.v2"
    );
    // A weak (small-order) key in the allowlist is refused at start-up, naming the variable.
    let weak = format!("01{}", "00".repeat(31));
    let e = Config::from_lookup(|k| (k == "AI_POLICY_ALLOWED_PUBKEYS").then(|| weak.clone()))
        .unwrap_err();
    assert_eq!(e.var, "AI_POLICY_ALLOWED_PUBKEYS");
    assert!(e.detail.contains("small-order"), "{e}");
    let e =
        Config::from_lookup(|k| (k == "KAFKA_MAX_TIMESTAMP_SKEW").then(|| "0".into())).unwrap_err();
    assert_eq!(e.var, "KAFKA_MAX_TIMESTAMP_SKEW");
}

fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| m.get(k).cloned())
}

#[test]
fn defaults_and_overrides() {
    let c = from(&[
        ("KAFKA_BROKERS", "a:1, b:2"),
        ("NODE_ID", "3"),
        ("KAFKA_TOPIC_COMMITS", "c.x"),
    ])
    .unwrap();
    assert_eq!(c.brokers, vec!["a:1", "b:2"]);
    assert_eq!(c.topic(Kind::Commit), "c.x");
    assert_eq!(c.topic(Kind::Anomaly), "ai.anomalies.v1");
    assert_eq!(c.group_for(true), "cybermesh-consensus-node-3");
    assert_eq!(c.producer.compression, Compression::Snappy);
    assert!(c.producer.idempotent);
    assert_eq!(c.request_timeout, Duration::from_secs(30));
    assert_eq!(c.producer.max_records_per_sec, None);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(20));
    let c = from(&[
        ("KAFKA_PRODUCER_MAX_RECORDS_PER_SEC", "500"),
        ("KAFKA_PRODUCER_MAX_BYTES_PER_SEC", "1048576"),
        ("MESHBUS_SHUTDOWN_TIMEOUT_MS", "1500"),
    ])
    .unwrap();
    assert_eq!(c.producer.max_records_per_sec, Some(500));
    assert_eq!(c.producer.max_bytes_per_sec, Some(1 << 20));
    assert_eq!(c.shutdown_timeout, Duration::from_millis(1500));
    assert_eq!(c.consumer.group_protocol, GroupProtocol::Classic);
    assert_eq!(c.consumer.group_instance_id, None);
    let c = from(&[
        ("KAFKA_GROUP_PROTOCOL", "Consumer"),
        ("KAFKA_GROUP_INSTANCE_ID", "validator-3"),
    ])
    .unwrap();
    assert_eq!(c.consumer.group_protocol, GroupProtocol::Consumer);
    assert_eq!(c.consumer.group_instance_id.as_deref(), Some("validator-3"));
    let e = from(&[("KAFKA_GROUP_PROTOCOL", "eager")]).unwrap_err();
    assert_eq!(e.var, "KAFKA_GROUP_PROTOCOL");
    for bad in ["0", "-1", "5000000000", "fast"] {
        let e = from(&[("KAFKA_PRODUCER_MAX_RECORDS_PER_SEC", bad)]).unwrap_err();
        assert_eq!(e.var, "KAFKA_PRODUCER_MAX_RECORDS_PER_SEC", "{bad}");
    }
}

#[test]
fn strict_environments_require_tls_and_refuse_plain() {
    let e = from(&[("ENVIRONMENT", "production")]).unwrap_err();
    assert_eq!(e.var, "KAFKA_TLS_ENABLED");
    let e = from(&[
        ("ENVIRONMENT", "staging"),
        ("KAFKA_TLS_ENABLED", "true"),
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", "u"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "KAFKA_SASL_MECHANISM");
    assert!(!e.to_string().contains("hunter2"));
    assert!(from(&[
        ("ENVIRONMENT", "development"),
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", "u"),
        ("KAFKA_SASL_PASSWORD", "p")
    ])
    .is_ok());
}

#[test]
fn password_never_in_debug() {
    let c = from(&[
        ("KAFKA_SASL_USERNAME", "u"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
    ])
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert_eq!(c.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);
}

#[test]
fn bad_values_name_their_variable() {
    assert_eq!(
        from(&[("KAFKA_PRODUCER_COMPRESSION", "brotli")])
            .unwrap_err()
            .var,
        "KAFKA_PRODUCER_COMPRESSION"
    );
    assert_eq!(from(&[("NODE_ID", "-1")]).unwrap_err().var, "NODE_ID");
    assert_eq!(
        from(&[("KAFKA_TLS_ENABLED", "maybe")]).unwrap_err().var,
        "KAFKA_TLS_ENABLED"
    );
    assert_eq!(
        from(&[("KAFKA_SASL_USERNAME", "u")]).unwrap_err().var,
        "KAFKA_SASL_PASSWORD"
    );
}

#[test]
fn the_policy_allowlist_can_come_from_a_file_but_not_from_both_places() {
    let key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[6; 32])
            .verifying_key()
            .to_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("allowed.txt");
    std::fs::write(&file, format!("# the AI service\n{key}\n")).unwrap();
    let path = file.to_str().unwrap();
    let c = from(&[("AI_POLICY_ALLOWED_PUBKEYS_FILE", path)]).unwrap();
    assert_eq!(c.verification.policy_allowlist.as_ref().unwrap().len(), 1);
    assert_eq!(
        c.verification.policy_allowlist_file.as_deref(),
        Some(file.as_path())
    );
    let e = from(&[
        ("AI_POLICY_ALLOWED_PUBKEYS_FILE", path),
        ("AI_POLICY_ALLOWED_PUBKEYS", &key),
    ])
    .unwrap_err();
    assert_eq!(e.var, "AI_POLICY_ALLOWED_PUBKEYS_FILE");
    // A weak key in the file: refused at start-up, naming the variable and the file.
    std::fs::write(&file, format!("01{}\n", "00".repeat(31))).unwrap();
    let e = from(&[("AI_POLICY_ALLOWED_PUBKEYS_FILE", path)]).unwrap_err();
    assert_eq!(e.var, "AI_POLICY_ALLOWED_PUBKEYS_FILE");
    assert!(e.detail.contains("allowed.txt"), "{e}");
    let e = from(&[("AI_POLICY_ALLOWED_PUBKEYS_FILE", "/nonexistent/allowed")]).unwrap_err();
    assert_eq!(e.var, "AI_POLICY_ALLOWED_PUBKEYS_FILE");
}

#[test]
fn the_replay_read_back_bounds_come_from_the_environment() {
    let d = from(&[]).unwrap().consumer.warmup;
    assert_eq!(d, WarmupSettings::default());
    assert_eq!(
        (d.max_records, d.max_time, d.threads),
        (1_000_000, Duration::from_secs(120), 0)
    );
    assert!(d.thread_count() >= 1);
    let c = from(&[
        ("KAFKA_REPLAY_WARMUP_MAX_RECORDS", "5000"),
        ("KAFKA_REPLAY_WARMUP_MAX_MS", "2500"),
        ("KAFKA_REPLAY_WARMUP_THREADS", "3"),
    ])
    .unwrap()
    .consumer
    .warmup;
    assert_eq!(
        (c.max_records, c.max_time, c.thread_count()),
        (5000, Duration::from_millis(2500), 3)
    );
    assert_eq!(
        from(&[("KAFKA_REPLAY_WARMUP_MAX_RECORDS", "0")])
            .unwrap()
            .consumer
            .warmup
            .max_records,
        0
    );
    for var in [
        "KAFKA_REPLAY_WARMUP_MAX_RECORDS",
        "KAFKA_REPLAY_WARMUP_MAX_MS",
        "KAFKA_REPLAY_WARMUP_THREADS",
    ] {
        assert_eq!(from(&[(var, "many")]).unwrap_err().var, var);
    }
    assert_eq!(
        from(&[("KAFKA_REPLAY_WARMUP_MAX_MS", "0")])
            .unwrap_err()
            .var,
        "KAFKA_REPLAY_WARMUP_MAX_MS"
    );
}

#[test]
fn the_delivery_timeout_and_breaker_come_from_the_environment_and_are_checked() {
    let d = from(&[]).unwrap();
    assert_eq!(d.producer.delivery_timeout, Duration::from_secs(120));
    assert_eq!(
        (
            d.producer.breaker_failures,
            d.producer.breaker_open_for,
            d.producer.breaker_successes
        ),
        (5, Duration::from_secs(30), 2)
    );
    let c = from(&[
        ("KAFKA_DELIVERY_TIMEOUT_MS", "45000"),
        ("KAFKA_BREAKER_FAILURES", "9"),
        ("KAFKA_BREAKER_OPEN_MS", "1500"),
        ("KAFKA_BREAKER_SUCCESSES", "3"),
    ])
    .unwrap();
    assert_eq!(c.producer.delivery_timeout, Duration::from_secs(45));
    assert_eq!(
        (
            c.producer.breaker_failures,
            c.producer.breaker_open_for,
            c.producer.breaker_successes
        ),
        (9, Duration::from_millis(1500), 3)
    );
    // At least linger + request timeout, as Kafka's clients require.
    let e = from(&[
        ("KAFKA_REQUEST_TIMEOUT_MS", "30000"),
        ("KAFKA_DELIVERY_TIMEOUT_MS", "30000"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "KAFKA_DELIVERY_TIMEOUT_MS");
    for var in [
        "KAFKA_DELIVERY_TIMEOUT_MS",
        "KAFKA_BREAKER_FAILURES",
        "KAFKA_BREAKER_OPEN_MS",
        "KAFKA_BREAKER_SUCCESSES",
    ] {
        assert_eq!(from(&[(var, "0")]).unwrap_err().var, var);
    }
}
