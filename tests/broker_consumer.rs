//! The verifying group consumer against a real broker (Apache Kafka, TLS + SCRAM): verification before
//! handling, SPEC 7 dead letters, commits, groups shared with librdkafka, per-node groups,
//! crashes and broker restarts.

mod common;
use common::broker::Broker;
use common::mesh::{self, Seen};
use common::sample;
use common::vectors;
use meshbus::contract::Kind;
use meshbus::dlq::DeadLetter;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const ALL: [Kind; Kind::ALL.len()] = Kind::ALL;

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
                .send_commit(sample::commit(300 + i, 50))
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
        mesh::recording_consumer(&mesh::quick(&config), "mixed", mesh::verifier(&v), &ALL).await;
    let stats = consumer.stats();
    let (stop, task) = mesh::spawn(consumer);
    let total = (valid.len() + invalid.len()) as u64;
    let done = mesh::wait_for(Duration::from_secs(90), || {
        let meshbus::consumer::StatsSnapshot {
            handled,
            dead_lettered: dead,
            ..
        } = stats.snapshot();
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
        let d = DeadLetter::from_record(None, Some(value), &headers).unwrap();
        assert_eq!(d.node_id, "0");
        assert!(d.failed_at_ms > 1_700_000_000_000);
        found.insert(
            (
                d.original_topic.clone(),
                d.original_partition,
                d.original_offset,
            ),
            (d.reason.clone(), d.value.clone().unwrap_or_default()),
        );
    }
    assert_eq!(found, invalid);

    // Committed offsets reached the end of every partition of every topic.
    let topics: Vec<&str> = ALL.iter().map(|k| k.default_topic()).collect();
    let got = b.committed("mixed");
    for (tp, end) in b.end_offsets(&topics) {
        if end > 0 {
            assert_eq!(got.get(&tp), Some(&end), "{tp:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshbus_and_librdkafka_share_a_group_and_together_see_everything() {
    let b = Broker::start(&[]);
    let v = vectors::load();
    let config = b.config();
    let (consumer, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        "shared",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let (stop, task) = mesh::spawn(consumer);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let py = b.py_group("ai.anomalies.v1", "shared", 30);
    // Let the rebalance settle, then produce.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let sent = send_anomalies(&ai, 0, 60).await;
    let out = tokio::task::spawn_blocking(move || py.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let mut py_assigned = Vec::new();
    let mut py_seen = BTreeSet::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(a) = j.get("assigned") {
            py_assigned = a.as_array().unwrap().clone();
        } else {
            py_seen.insert((
                "ai.anomalies.v1".to_string(),
                j["partition"].as_i64().unwrap() as i32,
                j["offset"].as_i64().unwrap(),
            ));
        }
    }
    let ours: BTreeSet<_> = handled_set(&seen).into_iter().collect();
    assert!(!py_assigned.is_empty(), "librdkafka got no partition");
    assert!(!ours.is_empty(), "meshbus got no record");
    assert!(!py_seen.is_empty(), "librdkafka got no record");
    assert!(ours.is_disjoint(&py_seen), "a record went to both members");
    let all: BTreeSet<_> = ours.union(&py_seen).cloned().collect();
    assert_eq!(all, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_with_per_node_groups_each_see_every_record() {
    let b = Broker::start(&[]);
    let v = vectors::load();
    let mut runs = Vec::new();
    for node in [1u32, 2] {
        let mut config = b.config();
        config.node_id = node;
        let group = config.validator_group();
        assert_eq!(group, format!("cybermesh-consensus-node-{node}"));
        let (consumer, seen, _) = mesh::recording_consumer(
            &mesh::quick(&config),
            &group,
            mesh::verifier(&v),
            &[Kind::Anomaly, Kind::Evidence, Kind::Policy],
        )
        .await;
        runs.push((mesh::spawn(consumer), seen));
    }
    let config = b.config();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let mut sent = send_anomalies(&ai, 0, 30).await;
    for i in 0..10 {
        let d = ai.send_policy(sample::policy(50 + i, 100)).await.unwrap();
        sent.insert((d.topic, d.partition, d.offset));
    }
    for ((stop, task), seen) in runs {
        assert!(
            mesh::wait_for(Duration::from_secs(60), || seen.lock().unwrap().len()
                >= sent.len())
            .await
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
        let got = handled_set(&seen);
        assert_eq!(got.len(), sent.len(), "no duplicates within one node");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), sent);
    }
}

/// A consumer whose handler takes `delay` per record, recording into `seen`.
async fn slow_consumer(
    config: &meshbus::config::Config,
    group: &str,
    v: &vectors::Vectors,
    seen: Seen,
    delay: Duration,
) -> meshbus::consumer::Consumer {
    let (c, _, _) =
        mesh::recording_consumer(&mesh::quick(config), group, mesh::verifier(v), &[]).await;
    c.handle(Kind::Anomaly, move |r: meshbus::consumer::Consumed| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(delay).await;
            seen.lock().unwrap().push((r.topic, r.partition, r.offset));
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_restarts_from_its_commits_and_loses_nothing() {
    let b = Broker::start(&[]);
    let v = vectors::load();
    let config = b.config();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let sent = send_anomalies(&ai, 0, 150).await;
    let seen: Seen = Arc::default();
    let first = slow_consumer(
        &config,
        "crashy",
        &v,
        seen.clone(),
        Duration::from_millis(20),
    )
    .await;
    let (_stop, task) = mesh::spawn(first);
    assert!(mesh::wait_for(Duration::from_secs(60), || seen.lock().unwrap().len() >= 40).await);
    // Crash: no final commit, no LeaveGroup.
    task.abort();
    let _ = task.await;
    let at_crash = seen.lock().unwrap().len();
    assert!(
        at_crash < sent.len(),
        "the crash came too late to test anything"
    );

    let second = slow_consumer(&config, "crashy", &v, seen.clone(), Duration::ZERO).await;
    let (stop, task) = mesh::spawn(second);
    let all_seen = mesh::wait_for(Duration::from_secs(90), || {
        seen.lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .len()
            >= sent.len()
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        all_seen,
        "only {} of {} after restart",
        handled_set(&seen).len(),
        sent.len()
    );
    let got = handled_set(&seen);
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique, sent);
    // At least once: redelivery is limited to what was handled after the last commit.
    let redelivered = got.len() - unique.len();
    assert!(redelivered <= 3 * 30, "{redelivered} records redelivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    common::logs();
    let mut b = Broker::start(&[]);
    let v = vectors::load();
    let config = b.config();
    // One signer throughout: a second signer on the same fixed clock would repeat nonces.
    let signer = mesh::ai_signer(&v);
    let mut sent = {
        let ai = mesh::producer(&config, Some(signer.clone())).await;
        send_anomalies(&ai, 0, 100).await
    };
    let seen: Seen = Arc::default();
    let c = slow_consumer(
        &config,
        "restart",
        &v,
        seen.clone(),
        Duration::from_millis(30),
    )
    .await;
    let (stop, task) = mesh::spawn(c);
    assert!(mesh::wait_for(Duration::from_secs(60), || seen.lock().unwrap().len() >= 20).await);
    b.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.restart();
    {
        let ai = mesh::producer(&config, Some(signer)).await;
        sent.extend(send_anomalies(&ai, 1000, 50).await);
    }
    let all_seen = mesh::wait_for(Duration::from_secs(120), || {
        seen.lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .len()
            >= sent.len()
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        all_seen,
        "only {} of {}",
        handled_set(&seen).len(),
        sent.len()
    );
    let unique: BTreeSet<_> = handled_set(&seen).into_iter().collect();
    assert_eq!(unique, sent);
    let ends: BTreeMap<_, _> = b
        .end_offsets(&["ai.anomalies.v1"])
        .into_iter()
        .filter(|(_, end)| *end > 0)
        .collect();
    let got = b.committed("restart");
    assert_eq!(
        got, ends,
        "committed offsets reach the end after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_failures_are_retried_then_dead_lettered_and_a_failing_dlq_blocks_the_commit() {
    common::logs();
    let b = Broker::start(&[]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, "solo.anomalies".into());
    config.dlq_topic = "late.dlq".into();
    config.producer.max_retries = 0;
    config.consumer.retry_max = 2;
    config.consumer.retry_backoff = Duration::from_millis(20);
    let t = meshbus::kafka::Client::connect(&config).await.unwrap();
    t.ensure_topic("solo.anomalies", 1).await.unwrap();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..3 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    // The handler fails for offset 1 every time.
    let attempts = Arc::new(std::sync::Mutex::new(BTreeMap::<i64, u32>::new()));
    let (c, _, _) =
        mesh::recording_consumer(&mesh::quick(&config), "failing", mesh::verifier(&v), &[]).await;
    let a = attempts.clone();
    let c = c.handle(Kind::Anomaly, move |r: meshbus::consumer::Consumed| {
        let a = a.clone();
        async move {
            *a.lock().unwrap().entry(r.offset).or_default() += 1;
            if r.offset == 1 {
                Err("downstream refused".into())
            } else {
                Ok(())
            }
        }
    });
    let offsets = c.offsets();
    let (stop, task) = mesh::spawn(c);
    let tp = ("solo.anomalies".to_string(), 0);
    // Offset 0 is handled and committed; offset 1 cannot reach the missing DLQ topic.
    assert!(
        mesh::wait_for(Duration::from_secs(30), || offsets.committed(&tp)
            == Some(1))
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        offsets.committed(&tp),
        Some(1),
        "commit passed a record not yet dead-lettered"
    );
    assert_eq!(attempts.lock().unwrap()[&1], 3, "1 try + retry_max 2");
    assert!(
        !attempts.lock().unwrap().contains_key(&2),
        "offset 2 handled out of order"
    );
    // Once the DLQ topic exists, the partition moves on.
    t.ensure_topic("late.dlq", 1).await.unwrap();
    assert!(
        mesh::wait_for(Duration::from_secs(60), || offsets.committed(&tp)
            == Some(3))
        .await
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let rows = b.py_read("late.dlq", 1);
    let h = &rows[0]["headers"];
    assert_eq!(h["reason"], hex::encode("handler_failed"));
    assert_eq!(h["original_offset"], hex::encode("1"));
    assert_eq!(h["error"], hex::encode("downstream refused"));
}

/// Graceful shutdown commits and leaves the group: the remaining member takes over at once
/// (well before the 30 s session timeout would have expired), and resumes from the commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_leaves_the_group_and_the_other_member_resumes_at_once() {
    let b = Broker::start(&[]);
    let v = vectors::load();
    let config = b.config();
    let mut slow = mesh::quick(&config);
    slow.consumer.session_timeout = Duration::from_secs(30);
    slow.consumer.rebalance_timeout = Duration::from_secs(30);
    let (first, seen_a, _) =
        mesh::recording_consumer(&slow, "leave", mesh::verifier(&v), &[Kind::Anomaly]).await;
    let (stop_a, task_a) = mesh::spawn(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (second, seen_b, _) =
        mesh::recording_consumer(&slow, "leave", mesh::verifier(&v), &[Kind::Anomaly]).await;
    let (stop_b, task_b) = mesh::spawn(second);
    let signer = mesh::ai_signer(&v);
    let ai = mesh::producer(&config, Some(signer.clone())).await;
    let before = send_anomalies(&ai, 0, 30).await;
    assert!(
        mesh::wait_for(Duration::from_secs(40), || {
            seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len() >= before.len()
        })
        .await
    );
    assert!(
        !seen_a.lock().unwrap().is_empty() && !seen_b.lock().unwrap().is_empty(),
        "both members had partitions"
    );
    stop_a.send(()).unwrap();
    task_a.await.unwrap().unwrap();
    let left_at = std::time::Instant::now();
    let after = send_anomalies(&ai, 100, 30).await;
    let taken_over = mesh::wait_for(Duration::from_secs(15), || {
        let b: BTreeSet<_> = handled_set(&seen_b).into_iter().collect();
        after.is_subset(&b)
    })
    .await;
    assert!(
        taken_over,
        "the remaining member did not take over within 15 s"
    );
    eprintln!("take-over after leave: {:?}", left_at.elapsed());
    stop_b.send(()).unwrap();
    task_b.await.unwrap().unwrap();
    // Nothing handled twice: A committed what it handled before leaving.
    let all: Vec<_> = handled_set(&seen_a)
        .into_iter()
        .chain(handled_set(&seen_b))
        .collect();
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a record was handled twice");
    assert_eq!(unique, before.union(&after).cloned().collect());
}

/// Established client connections of this process's network namespace to `port` (IPv4).
fn connections_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && u16::from_str_radix(f[2].rsplit(':').next().unwrap(), 16).ok() == Some(port)
        })
        .count()
}

/// One connection pool per consumer: the group member, its fetches, its offset commits and its
/// DLQ writer all use the client's connections to the (single) broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_and_its_dlq_writer_share_one_connection_pool() {
    let b = Broker::start(&["pool.dlq"]);
    let port = b.nodes()[0].sasl_ssl;
    let v = vectors::load();
    let mut config = b.config();
    config.dlq_topic = "pool.dlq".into();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    send_anomalies(&ai, 0, 6).await;
    let forged = v
        .vectors
        .iter()
        .find(|c| c.expect == "bad_signature" && c.topic == "ai.anomalies.v1")
        .map(|c| hex::decode(&c.record_hex).unwrap())
        .unwrap();
    ai.send_raw("ai.anomalies.v1", None, forged, Default::default())
        .await
        .unwrap();
    let baseline = connections_to(port);
    let (consumer, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        "pool",
        mesh::verifier(&v),
        &[Kind::Anomaly],
    )
    .await;
    let stats = consumer.stats();
    let (stop, task) = mesh::spawn(consumer);
    assert!(
        mesh::wait_for(Duration::from_secs(40), || seen.lock().unwrap().len() >= 6
            && stats.snapshot().dead_lettered >= 1)
        .await,
        "the consumer did not handle and dead-letter its records: {:?}",
        stats.snapshot()
    );
    let used = connections_to(port) - baseline;
    eprintln!("connections of one consumer (group, fetch, commits, DLQ writer): {used}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        (1..=3).contains(&used),
        "a consumer with its DLQ writer holds {used} connections to one broker"
    );
}

/// The verification settings from the environment reach the consumer through
/// `Config::verifier_config`: the policy allowlist, both skews and the policy-update signing
/// domain each dead-letter what the defaults would accept, with their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_settings_from_the_environment_reach_the_consumer() {
    use meshbus::contract::{FixedClock, Signer, SigningDomains, Verifier};
    let b = Broker::start(&["settings.dlq"]);
    let v = vectors::load();
    let mut env: BTreeMap<String, String> = b.env().into_iter().collect();
    env.insert("KAFKA_DLQ_TOPIC".into(), "settings.dlq".into());
    env.insert(
        "AI_POLICY_ALLOWED_PUBKEYS".into(),
        v.keys.other_pubkey_hex.clone(),
    );
    env.insert("KAFKA_MAX_TIMESTAMP_SKEW".into(), "100".into());
    env.insert("CONTROL_TIMESTAMP_SKEW".into(), "30".into());
    env.insert(
        "CONTROL_POLICY_SIGNING_DOMAIN".into(),
        "control.policy.v2".into(),
    );
    let config = meshbus::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let at =
        |secs: i64| -> Arc<dyn meshbus::contract::Clock> { Arc::new(FixedClock::at_secs(secs)) };
    let ai = |secs| {
        Signer::with_clock(
            vectors::seed(&v.keys.ai_producer_seed_hex),
            0,
            SigningDomains::default(),
            at(secs),
        )
    };
    let backend = |secs, domains: SigningDomains| {
        Signer::with_clock(
            vectors::seed(&v.keys.control_signer_seed_hex),
            0,
            domains,
            at(secs),
        )
    };
    let v2 = config.signing_domains.clone();
    let raw = mesh::producer(&config, None).await;
    let send = |kind: Kind, m: meshbus::contract::Message| {
        let raw = raw.clone();
        let topic = config.topic(kind).to_string();
        async move {
            raw.send_raw(&topic, m.record_key(), m.encode(), Default::default())
                .await
                .unwrap();
        }
    };
    let policy = meshbus::contract::Message::Policy(sample::policy(1, 100));
    let anomaly = meshbus::contract::Message::Anomaly(sample::anomaly(2, 100));
    let update = || meshbus::contract::Message::PolicyUpdate(sample::policy_update(3, 100));
    let commit = meshbus::contract::Message::Commit(sample::commit(4, 10));
    // Refused: a policy signer outside the allowlist, an anomaly 200 s old (skew 100), a
    // commit 45 s old (skew 30), a policy update signed under the default domain.
    send(Kind::Policy, ai(v.now).sign_message(policy)).await;
    send(Kind::Anomaly, ai(v.now - 200).sign_message(anomaly)).await;
    send(
        Kind::Commit,
        backend(v.now - 45, v2.clone()).sign_message(commit),
    )
    .await;
    send(
        Kind::PolicyUpdate,
        backend(v.now, SigningDomains::default()).sign_message(update()),
    )
    .await;
    // Accepted: a policy update signed under the configured v2 domain.
    send(
        Kind::PolicyUpdate,
        backend(v.now, v2).sign_message(update()),
    )
    .await;

    let trust = meshbus::contract::TrustStore::from_keys(
        v.trusted_control_keys
            .iter()
            .map(|k| meshbus::contract::keys::decode_hex32(k).unwrap()),
    );
    let verifier = Arc::new(Verifier::with_clock(
        config.verifier_config(),
        trust,
        at(v.now),
    ));
    let (consumer, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        "settings",
        verifier,
        &[
            Kind::Policy,
            Kind::Anomaly,
            Kind::Commit,
            Kind::PolicyUpdate,
        ],
    )
    .await;
    let stats = consumer.stats();
    let (stop, task) = mesh::spawn(consumer);
    let done = mesh::wait_for(Duration::from_secs(60), || {
        stats.snapshot().dead_lettered >= 4 && !seen.lock().unwrap().is_empty()
    })
    .await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(done, "stats {:?}", stats.snapshot());
    let handled = seen.lock().unwrap().clone();
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0].0, "control.policy.v1");
    let mut reasons: Vec<String> = b
        .py_read("settings.dlq", 4)
        .iter()
        .map(|r| {
            String::from_utf8(hex::decode(r["headers"]["reason"].as_str().unwrap()).unwrap())
                .unwrap()
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "timestamp_skew",
            "timestamp_skew",
            "untrusted_key"
        ]
    );
}

/// The next item of `records`, within 60 s.
async fn next<T>(
    records: &mut meshbus::consumer::VerifiedStream<T>,
) -> meshbus::consumer::Received<T> {
    tokio::time::timeout(Duration::from_secs(60), records.next())
        .await
        .expect("an item within 60 s")
        .expect("the stream is open")
}

/// The stream API on the same partition workers: an acked item is committed, a nacked one is
/// dead-lettered at once (no retries) and then committed, a dropped one stays uncommitted and
/// comes again, and the stream ends when the consumer stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_commits_acked_dead_letters_nacked_and_offers_a_dropped_item_again() {
    use meshbus::consumer::Consumer;
    use meshbus::contract::AnomalyEvent;
    let b = Broker::start(&[]);
    let v = vectors::load();
    let mut config = b.config();
    config
        .topics
        .insert(Kind::Anomaly, "stream.anomalies".into());
    config.dlq_topic = "stream.dlq".into();
    config.consumer.retry_max = 3;
    config.consumer.retry_backoff = Duration::from_millis(20);
    b.create_topics(1, &[], &["stream.anomalies", "stream.dlq"]);
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    let sent = send_anomalies(&ai, 0, 5).await;
    assert_eq!(sent.len(), 5);
    let mut consumer = Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        meshbus::metrics::Metrics::new(),
        "streaming",
    )
    .await
    .unwrap();
    let mut records = consumer.stream::<AnomalyEvent>();
    let (offsets, stats) = (consumer.offsets(), consumer.stats());
    let (stop, task) = mesh::spawn(consumer);
    let tp = ("stream.anomalies".to_string(), 0);
    let first = next(&mut records).await;
    assert_eq!(first.offset, 0);
    assert_eq!(
        first.message.id,
        sample::anomaly(0, 256).id,
        "typed: an AnomalyEvent"
    );
    first.ack();
    let second = next(&mut records).await;
    assert_eq!(second.offset, 1);
    second.nack("the policy engine refused it");
    let third = next(&mut records).await;
    assert_eq!(third.offset, 2);
    drop(third);
    let again = next(&mut records).await;
    assert_eq!(again.offset, 2, "a dropped item comes again, in order");
    // While offset 2 is unanswered, nothing past it is committed.
    assert!(
        mesh::wait_for(Duration::from_secs(30), || offsets.committed(&tp)
            == Some(2))
        .await,
        "{:?}",
        offsets.committed(&tp)
    );
    again.ack();
    for offset in [3, 4] {
        let d = next(&mut records).await;
        assert_eq!(d.offset, offset);
        d.ack();
    }
    assert!(
        mesh::wait_for(Duration::from_secs(30), || offsets.committed(&tp)
            == Some(5))
        .await
    );
    let meshbus::consumer::StatsSnapshot {
        received,
        handled,
        handler_failed: failed,
        dead_lettered: dead,
        ..
    } = stats.snapshot();
    assert_eq!(
        (received, handled, failed, dead),
        (5, 4, 1, 1),
        "the offer again is no new fetch"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the consumer stops")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), records.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends with the consumer");
    let rows = b.py_read("stream.dlq", 1);
    let h = &rows[0]["headers"];
    assert_eq!(h["reason"], hex::encode("handler_failed"));
    assert_eq!(h["original_offset"], hex::encode("1"));
    assert_eq!(h["error"], hex::encode("the policy engine refused it"));
}
