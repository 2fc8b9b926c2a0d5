//! Running meshbus the way a Kubernetes operator does (issue 13), on Apache Kafka (one shared
//! node): static group membership (KIP-345) and the next-generation group protocol (KIP-848)
//! shared with the Java client.

mod common;
use common::broker::{Broker, Peer};
use common::mesh::{self, wait_for};
use common::sample;
use common::vectors;
use meshbus::config::{Config, GroupProtocol};
use meshbus::consumer::{ConsumerOptions, GroupTiming};
use meshbus::contract::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

fn broker() -> &'static Broker {
    static B: OnceLock<Broker> = OnceLock::new();
    B.get_or_init(|| Broker::start(&[]))
}

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
    let mut options = ConsumerOptions::new("ops-static");
    options.timing = {
        let mut t = GroupTiming::default();
        t.session_timeout = Duration::from_secs(15);
        t.rebalance_timeout = Duration::from_secs(15);
        t.heartbeat_interval = Duration::from_millis(500);
        t
    };
    options.fetch_max_wait_ms = 200;
    options.commit_interval = Duration::from_millis(200);
    let member = |id: &str| {
        let mut c = config.clone();
        c.consumer.group_instance_id = Some(id.to_string());
        c
    };

    // B first (it leads the group), then A.
    let (cb, seen_b, _) = mesh::recording_consumer(
        &member("ops-b"),
        options.clone(),
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
        options.clone(),
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
        options.clone(),
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
        &config,
        mesh::options(group),
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
            meshbus::contract::Message::Anomaly(a) => *by_key.entry(a.pubkey).or_default() += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(by_key.len(), 2, "both keys signed records");
    assert!(by_key.contains_key(new.verifying_key().to_bytes().as_slice()));
}

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

/// The static x86_64 binary (`scripts/static-build`; `.ci/run` builds it before the tests).
fn static_binary() -> std::path::PathBuf {
    let p = std::env::var_os("MESHBUS_STATIC_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/release/meshbus")
        });
    assert!(
        p.exists(),
        "{} is missing: build it with `bash scripts/static-build` (the test command does)",
        p.display()
    );
    p
}

/// Runs `/meshbus args` inside `root` as its whole filesystem: chroot as root, else an
/// unprivileged user namespace.
fn in_empty_root(
    root: &std::path::Path,
    env: &[(String, String)],
    args: &[&str],
) -> std::process::Output {
    // Found on this process's PATH (the child's environment is emptied).
    let tool = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name} is not installed"))
    };
    let mut c = if is_root() {
        let mut c = std::process::Command::new(tool("chroot"));
        c.arg(root);
        c
    } else {
        let mut c = std::process::Command::new(tool("unshare"));
        c.args(["--user", "--map-root-user", "--root"]).arg(root);
        c
    };
    c.env_clear()
        .envs(env.iter().cloned())
        .arg("/meshbus")
        .args(args);
    c.output().expect("chroot/unshare runs")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn the_static_binary_runs_from_an_empty_root_against_kafka() {
    use common::cli::text;
    let bin = static_binary();
    let b = broker();
    let topic = "ops.scratch";
    b.create_topics(1, &[], &[topic]);
    // The root holds the binary, the broker's CA file and an empty directory for a key: no
    // libc, no /etc, no /dev, no shell.
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, root.path().join("meshbus")).unwrap();
    std::fs::create_dir_all(root.path().join("certs")).unwrap();
    std::fs::create_dir_all(root.path().join("keys")).unwrap();
    let ca = b
        .env()
        .into_iter()
        .find(|(k, _)| k == "KAFKA_CA_CERT")
        .unwrap()
        .1;
    std::fs::copy(&ca, root.path().join("certs/ca.pem")).unwrap();
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(entries.len(), 3, "meshbus, certs/, keys/");
    let env: Vec<(String, String)> = b
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "KAFKA_CA_CERT" {
                (k, "/certs/ca.pem".into())
            } else {
                (k, v)
            }
        })
        .chain([("KAFKA_TOPIC_ANOMALY".to_string(), topic.to_string())])
        .chain([("KAFKA_DLQ_TOPIC".to_string(), "ops.scratch.dlq".to_string())])
        .collect();
    b.create_topics(1, &[], &["ops.scratch.dlq"]);

    let out = in_empty_root(root.path(), &env, &["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = in_empty_root(root.path(), &env, &["keygen", "--out", "/keys/ai.pem"]);
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    let out = in_empty_root(
        root.path(),
        &env,
        &[
            "produce",
            "--kind",
            "anomaly",
            "--sample",
            "5",
            "--key",
            "/keys/ai.pem",
        ],
    );
    assert!(
        out.status.success(),
        "produce over TLS + SCRAM: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).lines().count(), 5);
    let out = in_empty_root(
        root.path(),
        &env,
        &[
            "consume",
            "--kind",
            "anomaly",
            "--group",
            "ops-scratch",
            "--json",
            "--max",
            "5",
            "--seconds",
            "60",
        ],
    );
    assert!(out.status.success(), "consume: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        5,
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_roles_run_a_small_mesh() {
    use meshbus::consumer::Consumed;
    use meshbus::contract::{TrustStore, Verifier};
    use meshbus::mesh::{roles, Mesh};
    let b = broker();
    let mut config = b.config();
    for kind in Kind::ALL {
        config
            .topics
            .insert(kind, format!("ops.roles.{}", kind.default_topic()));
    }
    config.dlq_topic = "ops.roles.dlq".into();
    let topics: Vec<String> = config.topics.values().cloned().collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    b.create_topics(1, &[], &names);
    b.create_topics(1, &[], &["ops.roles.dlq"]);
    let key = |seed: u8| ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let (ai_key, backend_key, agent_key) = (key(1), key(2), key(3));
    let verifier = |acks: Option<[u8; 32]>| {
        Verifier::new(
            {
                let mut vc = config.verifier_config();
                vc.ack_keys = acks.map(|k| TrustStore::from_keys([k]));
                vc
            },
            TrustStore::from_keys([backend_key.verifying_key().to_bytes()]),
        )
    };
    let metrics = meshbus::metrics::Metrics::new();
    let seen: mesh::Seen = Default::default();
    let record = |seen: &mesh::Seen| {
        let seen = seen.clone();
        move |r: Consumed| {
            seen.lock().unwrap().push((r.topic, r.partition, r.offset));
            std::future::ready(Ok(()))
        }
    };
    let mut c = config.clone();
    c.consumer_group = "ops-roles".into();
    let builder = |c: &meshbus::config::Config, acks| {
        Mesh::builder(c.clone())
            .verifier(verifier(acks))
            .metrics(metrics.clone())
    };
    let validator = roles::validator(builder(&c, None), record(&seen))
        .await
        .unwrap();
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    c.consumer_group = "ops-roles-agent".into();
    c.node_id = 9;
    let agent = roles::agent(
        builder(&c, None).signing_key(agent_key.clone()),
        applied.clone(),
    )
    .await
    .unwrap();
    let feedback: mesh::Seen = Default::default();
    c.consumer_group = "ops-roles-ai".into();
    c.node_id = 7;
    let acks = Some(agent_key.verifying_key().to_bytes());
    let ai = roles::ai_service(builder(&c, acks).signing_key(ai_key), record(&feedback))
        .await
        .unwrap();
    // A role that signs refuses to start without a key, naming the role.
    let unkeyed = roles::backend(builder(&config, None)).await.unwrap_err();
    assert_eq!(unkeyed.code(), "no_signer", "{unkeyed}");
    let backend = roles::backend(builder(&config, None).signing_key(backend_key))
        .await
        .unwrap();

    ai.producer()
        .send_anomaly(sample::anomaly(1, 100))
        .await
        .unwrap();
    backend
        .producer()
        .send_policy_update(sample::policy_update(1, 100))
        .await
        .unwrap();
    // The validator verifies the anomaly; the agent applies the update and acknowledges it;
    // the AI service verifies the signed acknowledgement.
    let done = wait_for(Duration::from_secs(60), || {
        seen.lock().unwrap().len() == 1
            && applied.load(Ordering::SeqCst) == 1
            && feedback.lock().unwrap().len() == 1
    })
    .await;
    for role in [validator, agent, ai, backend] {
        assert!(role.stop(Duration::from_secs(20)).await.is_clean());
    }
    assert!(
        done,
        "validator {:?}, applied {}, feedback {:?}",
        seen.lock().unwrap(),
        applied.load(Ordering::SeqCst),
        feedback.lock().unwrap()
    );
    assert_eq!(
        feedback.lock().unwrap()[0].0,
        "ops.roles.control.policy.ack.v1"
    );
}
