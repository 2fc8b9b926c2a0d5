//! Issue 11's consumer hardening on Apache Kafka (one shared node): records the DLQ cannot hold
//! byte for byte are dead-lettered without their value (SPEC 7) instead of stalling the
//! partition, a record whose handling stopped unfinished is handled by the next owner instead
//! of being refused as a replay, and a member frozen past its session (its whole runtime
//! blocked, as by SIGSTOP) handles nothing it lost once it runs again.

mod common;
use common::broker::{Broker, Peer};
use common::mesh::{self, wait_for};
use common::sample;
use common::vectors;
use meshbus::consumer::{Consumed, Consumer};
use meshbus::contract::Kind;
use meshbus::dlq::DeadLetter;
use meshbus::metrics::Metrics;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The shared node, whose plaintext listener is advertised on a port a test may put a proxy on.
fn broker() -> &'static Broker {
    &shared().0
}

/// Tests that put the proxy on the advertised port take turns.
static PROXY_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn shared() -> &'static (Broker, u16) {
    static B: OnceLock<(Broker, u16)> = OnceLock::new();
    B.get_or_init(|| {
        let advertised = common::broker::free_port();
        let b = Broker::start_with(1, &[], &["--plain-advertise", &advertised.to_string()]);
        (b, advertised)
    })
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
    // And a null value (offset 3): its dead letter's value stays null.
    raw.send_raw_value(topic, Some(b"k-null".to_vec()), None, BTreeMap::new())
        .await
        .unwrap();
    // Then valid records: they must not wait behind the others.
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..5 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }

    let (seen, stats, (stop, task)) = mesh::running_anomaly_consumer(&config, "hard-big", &v).await;
    let done = mesh::wait_counts(&stats, 5, 4, Duration::from_secs(60)).await;
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
        .map(|r| DeadLetter::from_record(r.key, r.value.map(Vec::from), &r.headers).unwrap())
        .collect();
    assert_eq!(letters.len(), 4);
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
    let l = by_offset[&3];
    assert!(
        l.value.is_none() && l.omitted.is_none(),
        "a null value stays null"
    );

    // The command streams them, shows what was omitted, and will not replay an omitted value;
    // the null one is replayed as null.
    use common::cli::{meshbus, text};
    let cli = |args: &[&str]| {
        meshbus()
            .envs(b.env())
            .env("KAFKA_DLQ_TOPIC", dlq)
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["dlq", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let omitted: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["value_omitted"] == true).collect();
    assert_eq!(omitted.len(), 2);
    assert!(omitted.iter().any(|r| r["value_bytes"] == 2_000_000));
    assert!(rows
        .iter()
        .any(|r| r["original_offset"] == 3 && r["value_null"] == true));
    let end_before = b.end_offsets(&[topic])[&(topic.to_string(), 0)];
    let out = cli(&["dlq", "replay", "--all"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("value omitted").count(), 2, "{err}");
    assert!(err.contains("replayed 2, failed 2"), "{err}");
    let replayed = read_all(&config, topic).await;
    assert_eq!(replayed.len() as i64, end_before + 2);
    let null_copy = replayed
        .iter()
        .skip(end_before as usize)
        .find(|r| r.key.as_deref() == Some(&b"k-null"[..]))
        .expect("the null record was replayed");
    assert!(null_copy.value.is_none(), "the replayed null value is null");
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
        mesh::quick(&config),
        verifier.clone(),
        Metrics::new(),
        "hard-redeliver",
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, move |_r: Consumed| {
        a.fetch_add(1, Ordering::SeqCst);
        async { Err("downstream unavailable".into()) }
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
    assert_eq!(
        stats.snapshot().dead_lettered,
        0,
        "nothing dead-lettered yet"
    );

    let (next, seen, _) = mesh::recording_consumer(
        &mesh::quick(&config),
        "hard-redeliver",
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
    assert_eq!(next_stats.snapshot().rejected, 0, "refused (as replayed?)");
    // Now it was handled: a copy of it is a replay.
    let copy = read_all(&config, topic).await.remove(0);
    let again = verifier.verify(Kind::Anomaly, copy.value.as_deref().unwrap());
    assert_eq!(again.unwrap_err().reason.code(), "replayed");
}

/// (member, offset, when) of every record handled.
type Timeline = Arc<std::sync::Mutex<Vec<(&'static str, i64, std::time::Instant)>>>;

async fn timed_member(
    config: &meshbus::config::Config,
    verifier: Arc<meshbus::contract::Verifier>,
    name: &'static str,
    pace: Duration,
    timeline: &Timeline,
) -> Consumer {
    let t = timeline.clone();
    Consumer::connect(mesh::quick(config), verifier, Metrics::new(), "hard-stall")
        .await
        .unwrap()
        .handle(Kind::Anomaly, move |r: Consumed| {
            let t = t.clone();
            async move {
                tokio::time::sleep(pace).await;
                t.lock()
                    .unwrap()
                    .push((name, r.offset, std::time::Instant::now()));
                Ok(())
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_coordinator_stalls_stops_before_another_takes_its_partition() {
    let (b, advertised) = shared();
    let _turn = PROXY_TURN.lock().await;
    let topic = "hard.stall";
    b.create_topics(1, &[], &[topic]);
    let proxy = common::proxy::start(*advertised, b.plain_port()).await;
    let v = vectors::load();
    let mut direct = b.config();
    direct.topics.insert(Kind::Anomaly, topic.into());
    direct.dlq_topic = "hard.stall-dlq".into();
    let ai = mesh::producer(&direct, Some(mesh::ai_signer(&v))).await;
    for i in 0..400 {
        ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
    }
    // Member A talks to the cluster through the proxy, with a request timeout far longer than
    // its 6 s session; member B talks to it directly.
    let mut proxied = meshbus::config::Config::builder()
        .brokers([format!("127.0.0.1:{advertised}")])
        .request_timeout(Duration::from_secs(25))
        .build()
        .unwrap();
    proxied.topics = direct.topics.clone();
    proxied.dlq_topic = direct.dlq_topic.clone();
    let timeline: Timeline = Arc::default();
    let a = timed_member(
        &proxied,
        mesh::verifier(&v),
        "A",
        Duration::from_millis(25),
        &timeline,
    )
    .await;
    let (stop_a, task_a) = mesh::spawn(a);
    assert!(
        wait_for(Duration::from_secs(30), || timeline.lock().unwrap().len()
            >= 20)
        .await,
        "A never got going"
    );
    // A's coordinator (and fetch) answers stop coming; A still holds fetched records.
    proxy.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let stalled_at = std::time::Instant::now();
    let b_member = timed_member(&direct, mesh::verifier(&v), "B", Duration::ZERO, &timeline).await;
    let (stop_b, task_b) = mesh::spawn(b_member);
    let b_started = wait_for(Duration::from_secs(60), || {
        timeline.lock().unwrap().iter().any(|(m, _, _)| *m == "B")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = stop_b.send(());
    let _ = stop_a.send(());
    let _ = tokio::time::timeout(Duration::from_secs(40), task_b).await;
    let _ = tokio::time::timeout(Duration::from_secs(40), task_a).await;
    assert!(b_started, "B never took the partition");

    let events = timeline.lock().unwrap().clone();
    let last_a = events
        .iter()
        .filter(|(m, _, _)| *m == "A")
        .map(|e| e.2)
        .max()
        .unwrap();
    let first_b = events
        .iter()
        .filter(|(m, _, _)| *m == "B")
        .map(|e| e.2)
        .min()
        .unwrap();
    let a_after_stall = events
        .iter()
        .filter(|(m, _, t)| *m == "A" && *t > stalled_at)
        .count();
    eprintln!(
        "A handled {a_after_stall} records after the stall and stopped {:?} after it; B started {:?} after it",
        last_a.saturating_duration_since(stalled_at),
        first_b.saturating_duration_since(stalled_at)
    );
    assert!(
        a_after_stall > 0,
        "A should still have had fetched records to work on"
    );
    assert!(
        last_a < first_b,
        "A handled a record {:?} after B started on the same partition",
        last_a - first_b
    );
}

/// Member A runs alone on a current-thread runtime of its own thread; its handler blocks that
/// thread for 10 s at one record, which freezes the whole member (heartbeats included), as
/// SIGSTOP freezes a process. Its 6 s session expires and member B takes the partition. When A
/// runs again it still holds fetched records: it must not handle any of them (the partition is
/// B's), only notice the loss. Its rejoin then starts a rebalance that may give the partition
/// back to A, which then handles what B had not: the partition is finished by its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_session_handles_nothing_it_lost_once_resumed() {
    common::logs();
    let b = broker();
    let topic = "hard.frozen";
    b.create_topics(1, &[], &[topic]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..300 {
        ai.send_anomaly(sample::anomaly(i, 200)).await.unwrap();
    }
    let timeline: Timeline = Arc::default();
    let frozen: Arc<std::sync::Mutex<Option<(std::time::Instant, std::time::Instant)>>> =
        Arc::default();
    let (stop_a, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let member_a = {
        let (config, v, t, frozen) = (
            config.clone(),
            mesh::verifier(&v),
            timeline.clone(),
            frozen.clone(),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let c = Consumer::connect(mesh::quick(&config), v, Metrics::new(), "hard-frozen")
                    .await
                    .unwrap()
                    .handle(Kind::Anomaly, move |r: Consumed| {
                        let (t, frozen) = (t.clone(), frozen.clone());
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            t.lock()
                                .unwrap()
                                .push(("A", r.offset, std::time::Instant::now()));
                            if r.offset == 40 {
                                let from = std::time::Instant::now();
                                std::thread::sleep(Duration::from_secs(10)); // the freeze
                                *frozen.lock().unwrap() = Some((from, std::time::Instant::now()));
                            }
                            Ok(())
                        }
                    });
                let _ = c
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        })
    };
    // B joins once A is frozen (A is alone until then, so the partition is A's).
    let at_freeze = || timeline.lock().unwrap().iter().any(|e| e.1 == 40);
    assert!(
        wait_for(Duration::from_secs(60), at_freeze).await,
        "A never got to the record it freezes at"
    );
    let b_member = {
        let t = timeline.clone();
        Consumer::connect(
            mesh::quick(&config),
            mesh::verifier(&v),
            Metrics::new(),
            "hard-frozen",
        )
        .await
        .unwrap()
        .handle(Kind::Anomaly, move |r: Consumed| {
            let t = t.clone();
            async move {
                t.lock()
                    .unwrap()
                    .push(("B", r.offset, std::time::Instant::now()));
                Ok(())
            }
        })
    };
    let (stop_b, task_b) = mesh::spawn(b_member);
    // Finished: every record handled, by whichever member owns the partition by then. When A
    // runs again it rejoins, and the eager rebalance that starts may give the partition back
    // to A (the range assignor gives a 1-partition topic to the first member of the
    // coordinator's list, usually A, which rejoins before B has revoked): then A handles the
    // rest, after B's revocation committed what B handled. Only a busy machine gets there (B
    // is done before A resumes otherwise), so demanding that B finish was a flake.
    let done = wait_for(Duration::from_secs(120), || {
        frozen.lock().unwrap().is_some()
            && timeline
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.1)
                .collect::<std::collections::BTreeSet<i64>>()
                .len()
                == 300
    })
    .await;
    let _ = stop_b.send(());
    let _ = stop_a.send(());
    let _ = tokio::time::timeout(Duration::from_secs(40), task_b).await;
    member_a.join().unwrap();
    let events = timeline.lock().unwrap().clone();
    let (from, resumed) = frozen
        .lock()
        .unwrap()
        .expect("A's handler never came back from the freeze");
    let at = |t: std::time::Instant| {
        format!(
            "{:+.1}s",
            t.saturating_duration_since(from).as_secs_f64()
                - from.saturating_duration_since(t).as_secs_f64()
        )
    };
    let handled_by = |m: &str| -> Vec<(i64, std::time::Instant)> {
        events
            .iter()
            .filter(|e| e.0 == m)
            .map(|e| (e.1, e.2))
            .collect()
    };
    let (by_a, by_b) = (handled_by("A"), handled_by("B"));
    let after: Vec<i64> = by_a
        .iter()
        .filter(|(_, t)| *t > resumed)
        .map(|e| e.0)
        .collect();
    let span = |h: &[(i64, std::time::Instant)]| match (h.first(), h.last()) {
        (Some(f), Some(l)) => format!(
            "{} records, offset {} at {} to offset {} at {}",
            h.len(),
            f.0,
            at(f.1),
            l.0,
            at(l.1)
        ),
        _ => "nothing".to_string(),
    };
    eprintln!(
        "times from the freeze; A resumed at {}. A handled {}; B handled {}; A after resuming: {:?}",
        at(resumed),
        span(&by_a),
        span(&by_b),
        after
    );
    assert!(
        done,
        "the partition was not finished (offsets 0-299 handled) within 120 s"
    );
    assert!(!by_b.is_empty(), "B never took over the partition A lost");
    let b_offsets: std::collections::BTreeSet<i64> = by_b.iter().map(|e| e.0).collect();
    // The property: nothing A handled once it ran again was handled by B, i.e. A handled no
    // record of the partition while it was B's (only what it got back in a later rebalance,
    // after B's revocation committed what B had handled).
    let lost: Vec<i64> = after
        .iter()
        .copied()
        .filter(|o| b_offsets.contains(o))
        .collect();
    assert!(
        lost.is_empty(),
        "the resumed member handled records of a partition it had lost: {lost:?} (all it handled after resuming: {after:?})"
    );
    // Each member handles a record once; the two both handle only what A handled before
    // the freeze and could not commit (B starts at the group's committed offset).
    for (m, h) in [("A", &by_a), ("B", &by_b)] {
        let mut seen = std::collections::BTreeSet::new();
        let twice: Vec<i64> = h.iter().map(|e| e.0).filter(|o| !seen.insert(*o)).collect();
        assert!(twice.is_empty(), "{m} handled {twice:?} twice");
    }
    let both: Vec<i64> = by_a
        .iter()
        .map(|e| e.0)
        .filter(|o| b_offsets.contains(o))
        .collect();
    assert!(
        both.iter().all(|o| *o <= 40),
        "records handled by both members beyond those A handled before its freeze: {both:?}"
    );
}

/// A handler that panics before it even returns its future.
struct PanicsAtOnce;

impl meshbus::consumer::Handler for PanicsAtOnce {
    fn handle(&self, r: Consumed) -> meshbus::consumer::HandlerFuture {
        if r.offset == 1 {
            panic!("handler bug at offset 1");
        }
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_handler_failure_not_a_silently_dead_partition() {
    let b = broker();
    let topic = "hard.panic";
    b.create_topics(1, &[], &[topic, "hard.panic-dlq"]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = "hard.panic-dlq".into();
    config.consumer.retry_max = 1;
    config.consumer.retry_backoff = Duration::from_millis(10);
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..5 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    let c = Consumer::connect(
        mesh::quick(&config),
        mesh::verifier(&v),
        Metrics::new(),
        "hard-panic",
    )
    .await
    .unwrap()
    .handle(Kind::Anomaly, PanicsAtOnce);
    let stats = c.stats();
    let (stop, task) = mesh::spawn(c);
    // Offset 1 is retried once, then dead-lettered as handler_failed; the others are handled.
    let done = wait_for(Duration::from_secs(30), || {
        let meshbus::consumer::StatsSnapshot {
            handled,
            handler_failed: failed,
            dead_lettered: dead,
            ..
        } = stats.snapshot();
        handled == 4 && failed == 1 && dead == 1
    })
    .await;
    let (reached, _) =
        mesh::commits_reach_end(b, "hard-panic", topic, Duration::from_secs(20)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(done, "stats {:?}", stats.snapshot());
    assert!(reached, "{:?}", b.committed("hard-panic"));
    let letters = read_all(&config, "hard.panic-dlq").await;
    assert_eq!(letters.len(), 1);
    let l = DeadLetter::from_record(
        letters[0].key.clone(),
        letters[0].value.clone().map(Vec::from),
        &letters[0].headers,
    )
    .unwrap();
    assert_eq!(
        (l.reason.as_str(), l.original_offset),
        ("handler_failed", 1)
    );
    assert!(l.error.contains("panicked"), "{}", l.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_over_its_byte_bound_waits_then_fails_with_a_typed_backpressure_error() {
    let (b, advertised) = shared();
    let _turn = PROXY_TURN.lock().await;
    let topic = "hard.backpressure";
    b.create_topics(1, &[], &[topic]);
    let proxy = common::proxy::start(*advertised, b.plain_port()).await;
    let mut config = meshbus::config::Config::builder()
        .brokers([format!("127.0.0.1:{advertised}")])
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    config.producer.max_retries = 0;
    // The records taken fail by their delivery timeout, just past the request timeout.
    config.producer.delivery_timeout = Duration::from_millis(3_100);
    config.producer.compression = meshbus::config::Compression::None;
    // The delivery timeouts below open the breaker; let it half-open soon after.
    config.producer.breaker_open_for = Duration::from_millis(500);
    let p = mesh::producer(&config, None).await;
    p.send_raw(topic, None, b"warm-up".to_vec(), BTreeMap::new())
        .await
        .unwrap();

    // The broker stops answering; 40 records of 1,000,000 bytes (40 MB) against the 32 MiB
    // bound: what does not fit waits the request timeout, then gets a typed error.
    proxy.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..40u32 {
        let p = p.clone();
        sends.spawn(async move {
            let mut value = vec![0u8; 1_000_000];
            value[..4].copy_from_slice(&i.to_be_bytes());
            let r = p
                .send_raw("hard.backpressure", None, value, BTreeMap::new())
                .await;
            (r, started.elapsed())
        });
    }
    let mut backpressure = Vec::new();
    let mut other = 0;
    while let Some(r) = sends.join_next().await {
        match r.unwrap() {
            (Err(meshbus::producer::SendError::Backpressure { bytes, waited }), _) => {
                assert_eq!(bytes, 1_000_000);
                backpressure.push(waited);
            }
            (Ok(d), _) => panic!("acknowledged while the broker was stalled: {d:?}"),
            (Err(_), _) => other += 1,
        }
    }
    proxy
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        backpressure.len() >= 5,
        "{} backpressure errors, {other} others",
        backpressure.len()
    );
    assert!(
        backpressure
            .iter()
            .all(|w| *w >= Duration::from_millis(2500)),
        "failed before waiting: {backpressure:?}"
    );
    // The bound held: the rest were taken (and failed by their delivery timeout).
    assert_eq!(backpressure.len() + other, 40);
    assert!(
        other <= 34,
        "{other} records were taken past the 32 MiB bound"
    );
    // Once the broker answers again, sends go through.
    let mut errors = Vec::new();
    for _ in 0..10 {
        match p
            .send_raw(topic, None, b"after".to_vec(), BTreeMap::new())
            .await
        {
            Ok(_) => break,
            Err(e) => errors.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        errors.len() < 10,
        "the producer did not recover: {errors:#?}"
    );
}

/// Flips a byte inside the records of the batch at `base_offset` in a partition's first log
/// segment, on disk, under the running broker (which checks CRCs on append, not on fetch).
fn corrupt_batch(segment: &std::path::Path, base_offset: i64) {
    let mut log = std::fs::read(segment).unwrap();
    let mut pos = 0usize;
    while pos + 12 <= log.len() {
        let base = i64::from_be_bytes(log[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(log[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if base == base_offset {
            // The last byte of the batch: inside its last record, covered by the CRC.
            let at = pos + 12 + len - 1;
            log[at] ^= 0xff;
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(segment)
                .unwrap();
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.write_all(&log[at..at + 1]).unwrap();
            f.sync_all().unwrap();
            return;
        }
        pos += 12 + len;
    }
    panic!("no batch at offset {base_offset} in {}", segment.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_on_the_broker_is_dead_lettered_and_does_not_stall_its_partition() {
    let b = broker();
    let topic = "hard.corrupt";
    b.create_topics(1, &[], &[topic, "hard.corrupt-dlq"]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = "hard.corrupt-dlq".into();
    config.producer.compression = meshbus::config::Compression::None;
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..10 {
        // One send at a time: one batch per record.
        let d = ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
        assert_eq!(d.offset, i as i64);
    }
    let segment = b
        .data_dir(1)
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    corrupt_batch(&segment, 4);

    let (seen, stats, (stop, task)) =
        mesh::running_anomaly_consumer(&config, "hard-corrupt", &v).await;
    let done = mesh::wait_counts(&stats, 9, 1, Duration::from_secs(30)).await;
    let (reached, _) =
        mesh::commits_reach_end(b, "hard-corrupt", topic, Duration::from_secs(20)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(done, "stats {:?}", stats.snapshot());
    assert!(reached, "{:?}", b.committed("hard-corrupt"));
    let offsets: Vec<i64> = seen.lock().unwrap().iter().map(|(_, _, o)| *o).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 5, 6, 7, 8, 9]);
    let letters = read_all(&config, "hard.corrupt-dlq").await;
    assert_eq!(letters.len(), 1);
    let l = DeadLetter::from_record(
        letters[0].key.clone(),
        letters[0].value.clone().map(Vec::from),
        &letters[0].headers,
    )
    .unwrap();
    assert_eq!((l.reason.as_str(), l.original_offset), ("malformed", 4));
    assert!(l.value.is_none());
    assert!(l.error.contains("undecodable"), "{}", l.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_a_garbage_subscription_or_a_missing_topic_do_not_block_the_group() {
    let (b, _) = shared();
    let topic = "hard.join";
    b.create_topics(2, &[], &[topic, "hard.join-dlq"]);
    let v = vectors::load();
    let mut config = b.config();
    config.topics.insert(Kind::Anomaly, topic.into());
    config.dlq_topic = "hard.join-dlq".into();
    let ai = mesh::producer(&config, Some(mesh::ai_signer(&v))).await;
    for i in 0..10 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    let group = "hard-join";
    let (seen, stats, (stop, task)) = mesh::running_anomaly_consumer(&config, group, &v).await;
    assert!(mesh::wait_counts(&stats, 10, 0, Duration::from_secs(30)).await);
    let rounds_before = stats.snapshot().assignments;

    // A member whose subscription is garbage (meshbus leads the group and must decode it), and
    // a Java member subscribed to a topic that does not exist, join the same group.
    let raw = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/raw_member.py"
        ))
        .args(["--port", &b.plain_port().to_string(), "--group", group])
        .args(["--seconds", "25", "--metadata-hex", "00ffdeadbeef"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut java = b.member(Peer::Java, "hard.nonexistent", group, 25);
    // The group completes rounds with them in it, and meshbus keeps consuming.
    assert!(
        wait_for(Duration::from_secs(40), || stats.snapshot().assignments
            > rounds_before)
        .await,
        "no round completed after the others joined"
    );
    for i in 10..20 {
        ai.send_anomaly(sample::anomaly(i, 100)).await.unwrap();
    }
    let handled = wait_for(Duration::from_secs(30), || seen.lock().unwrap().len() == 20).await;
    let out = raw.wait_with_output().unwrap();
    java.wait();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let joins: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        joins.iter().any(|j| j["join"] == 0),
        "the garbage member never joined: {joins:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        joins
            .iter()
            .filter(|j| j["join"] == 0)
            .all(|j| j["leader"] != j["me"]),
        "meshbus should lead: {joins:?}"
    );
    assert!(
        handled,
        "meshbus stopped consuming: {} of 20",
        seen.lock().unwrap().len()
    );
    assert!(
        java.assignments() >= 1,
        "the Java member never got through a join"
    );
}
