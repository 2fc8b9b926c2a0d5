//! `meshbus consume` keeps its trust material current without a restart: the control trust
//! store and the `ai.policy.v1` allowlist file reload on change and on SIGHUP, and a file that
//! does not load keeps the last good one in force (logged and counted).

mod common;
use common::mesh::{self};
use common::sample;
use common::vectors;
use meshbus::contract::Kind;
use std::collections::BTreeSet;
use std::time::Duration;

use common::broker::shared as broker;

/// The value of metric line `name` in a scrape (0 when absent).
fn metric(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes `/metrics` on `port` until `f` holds, for at most 30 s (the assertion names `what`).
fn wait_for_metrics(port: u16, what: &str, f: &dyn Fn(&str) -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = common::cli::probe(port, "/metrics").1;
        if f(&s) {
            return;
        }
        assert!(std::time::Instant::now() < end, "{what}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_trust_store_reloads_on_change_and_sighup_and_a_bad_file_keeps_the_last_good_one() {
    use common::cli::{meshbus, probe, signal, spawn_collecting, wait_exit};
    let b = broker();
    let topic = "ops.trust.commits";
    b.create_topics(1, &[], &[topic, "ops.trust.dlq"]);
    let v = vectors::load();
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    let key1 = vectors::seed(&v.keys.control_signer_seed_hex);
    let key2 = vectors::seed(&v.keys.other_seed_hex);
    let pem = |k: &ed25519_dalek::SigningKey| {
        meshbus::contract::keys::public_key_pem(&k.verifying_key()).unwrap()
    };
    std::fs::write(trust.join("backend-1.pem"), pem(&key1)).unwrap();

    let port = common::broker::free_port();
    let mut c = meshbus();
    c.envs(b.env())
        .env("KAFKA_TOPIC_COMMITS", topic)
        .env("KAFKA_DLQ_TOPIC", "ops.trust.dlq")
        .env("MESHBUS_LOG", "warn")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args([
            "consume",
            "--kind",
            "commit",
            "--group",
            "ops-trust",
            "--json",
            "--trust",
        ])
        .arg(&trust);
    let (mut consumer, lines) = spawn_collecting(&mut c);
    let scrape = || probe(port, "/metrics").1;
    let wait = |what: &str, f: &dyn Fn(&str) -> bool| wait_for_metrics(port, what, f);
    wait("ready", &|_| probe(port, "/readyz").0 == 200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = b.config();
    config.topics.insert(Kind::Commit, topic.into());
    let send = |key: &ed25519_dalek::SigningKey, height: i64| {
        rt.block_on(async {
            let p = mesh::producer(
                &config,
                Some(std::sync::Arc::new(meshbus::contract::Signer::new(
                    key.clone(),
                    0,
                    Default::default(),
                ))),
            )
            .await;
            p.send_commit(sample::commit(height as u64, 0))
                .await
                .unwrap();
        })
    };
    let untrusted = |s: &str| {
        metric(
            s,
            "kafka_messages_rejected_total{topic=\"ops.trust.commits\",reason=\"untrusted_key\"}",
        )
    };
    let heights = || -> BTreeSet<i64> {
        lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["message"]["height"].as_str().map_or_else(
                    || v["message"]["height"].as_i64().unwrap(),
                    |h| h.parse().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(metric(&scrape(), "meshbus_trust_keys"), 1.0);

    // key 1 trusted, key 2 not.
    send(&key1, 1);
    send(&key2, 2);
    wait("key 2 refused", &|s| untrusted(s) == 1.0);
    // A new key file appears: trusted without a restart.
    std::fs::write(trust.join("backend-2.pem"), pem(&key2)).unwrap();
    wait("key 2 loaded", &|s| metric(s, "meshbus_trust_keys") == 2.0);
    send(&key2, 3);
    // key 1's file is overwritten with key 2 (same size, modification time put back): the
    // change watch cannot see it, SIGHUP reloads it.
    let f1 = trust.join("backend-1.pem");
    let mtime = std::fs::metadata(&f1).unwrap().modified().unwrap();
    std::fs::write(&f1, pem(&key2)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f1)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(meshbus::mesh::TRUST_CHECK_EVERY * 3);
    assert_eq!(
        metric(&scrape(), "meshbus_trust_keys"),
        2.0,
        "reloaded without SIGHUP?"
    );
    signal(consumer.id(), "HUP");
    wait("key 1 gone", &|s| metric(s, "meshbus_trust_keys") == 1.0);
    send(&key1, 4);
    wait("key 1 refused", &|s| untrusted(s) == 2.0);
    // A bad file: refused with a metric naming it; the last good store (key 2) stays.
    std::fs::write(
        trust.join("broken.pem"),
        "-----BEGIN PUBLIC KEY-----\nnot a key\n",
    )
    .unwrap();
    wait("bad file counted", &|s| {
        s.lines().any(|l| {
            l.starts_with("meshbus_trust_reload_failures_total{file=\"")
                && l.contains("broken.pem")
                && !l.ends_with(" 0")
        })
    });
    send(&key2, 5);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !heights().contains(&5) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(consumer.id(), "TERM");
    let (code, err, _) = wait_exit(&mut consumer, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(heights(), BTreeSet::from([1, 3, 5]), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("trust store reload refused") && l.contains("broken.pem")),
        "no log line naming the file: {err}"
    );
}

/// The `ai.policy.v1` allowlist from a file (`AI_POLICY_ALLOWED_PUBKEYS_FILE`) reloads like the
/// trust store: a key added to the file is allowed without a restart, a key removed is refused
/// (on change and on SIGHUP), and a bad file keeps the last good list, counted and named.
#[test]
fn the_policy_allowlist_file_reloads_on_change_and_sighup_and_a_bad_file_keeps_the_last_good_one() {
    use common::cli::{meshbus, probe, signal, spawn_collecting, wait_exit};
    let b = broker();
    let topic = "ops.allow.policy";
    b.create_topics(1, &[], &[topic, "ops.allow.dlq"]);
    let v = vectors::load();
    let dir = tempfile::tempdir().unwrap();
    let allow = dir.path().join("allowed.txt");
    let key_a = vectors::seed(&v.keys.ai_producer_seed_hex);
    let key_b = vectors::seed(&v.keys.other_seed_hex);
    let hex_of = |k: &ed25519_dalek::SigningKey| hex::encode(k.verifying_key().to_bytes());
    std::fs::write(&allow, format!("# AI service keys\n{}\n", hex_of(&key_a))).unwrap();

    let port = common::broker::free_port();
    let mut c = meshbus();
    c.envs(b.env())
        .env("KAFKA_TOPIC_POLICY", topic)
        .env("KAFKA_DLQ_TOPIC", "ops.allow.dlq")
        .env("AI_POLICY_ALLOWED_PUBKEYS_FILE", &allow)
        .env("MESHBUS_LOG", "warn")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args([
            "consume",
            "--kind",
            "policy",
            "--group",
            "ops-allow",
            "--json",
        ]);
    let (mut consumer, lines) = spawn_collecting(&mut c);
    let scrape = || probe(port, "/metrics").1;
    let wait = |what: &str, f: &dyn Fn(&str) -> bool| wait_for_metrics(port, what, f);
    wait("ready", &|_| probe(port, "/readyz").0 == 200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = b.config();
    config.topics.insert(Kind::Policy, topic.into());
    let send = |key: &ed25519_dalek::SigningKey, n: u64| {
        rt.block_on(async {
            let signer = meshbus::contract::Signer::new(key.clone(), 0, Default::default());
            let p = mesh::producer(&config, Some(std::sync::Arc::new(signer))).await;
            p.send_policy(sample::policy(n, 64)).await.unwrap();
        })
    };
    let untrusted = |s: &str| {
        metric(
            s,
            "kafka_messages_rejected_total{topic=\"ops.allow.policy\",reason=\"untrusted_key\"}",
        )
    };
    let handled = || -> BTreeSet<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["message"]["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let keys = |s: &str| metric(s, "meshbus_policy_allowlist_keys");
    assert_eq!(keys(&scrape()), 1.0);

    // A allowed, B not.
    send(&key_a, 1);
    send(&key_b, 2);
    wait("B refused", &|s| untrusted(s) == 1.0);
    // B is added to the file: allowed without a restart.
    std::fs::write(&allow, format!("{}, {}\n", hex_of(&key_a), hex_of(&key_b))).unwrap();
    wait("B loaded", &|s| keys(s) == 2.0);
    send(&key_b, 3);
    // A is removed, the file keeping its size and modification time: only SIGHUP sees it.
    let mtime = std::fs::metadata(&allow).unwrap().modified().unwrap();
    std::fs::write(&allow, format!("{}, {}\n", hex_of(&key_b), hex_of(&key_b))).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&allow)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(meshbus::mesh::TRUST_CHECK_EVERY * 3);
    assert_eq!(keys(&scrape()), 2.0, "reloaded without SIGHUP?");
    signal(consumer.id(), "HUP");
    wait("A gone", &|s| keys(s) == 1.0);
    send(&key_a, 4);
    wait("A refused", &|s| untrusted(s) == 2.0);
    // A bad file (a weak key): refused, counted and named; the last good list (B) stays.
    std::fs::write(&allow, format!("01{}\n", "00".repeat(31))).unwrap();
    wait("bad file counted", &|s| {
        s.lines().any(|l| {
            l.starts_with("meshbus_trust_reload_failures_total{file=\"")
                && l.contains("allowed.txt")
                && !l.ends_with(" 0")
        })
    });
    send(&key_b, 5);
    let want: BTreeSet<String> = [1, 3, 5].into_iter().map(sample::uuid_v4).collect();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while handled() != want && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        untrusted(&scrape()),
        2.0,
        "only B's first and A's last record refused"
    );
    signal(consumer.id(), "TERM");
    let (code, err, _) = wait_exit(&mut consumer, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(handled(), want, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("policy allowlist reload refused") && l.contains("allowed.txt")),
        "no log line naming the file: {err}"
    );
}
