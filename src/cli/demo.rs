//! `meshbus demo`: the whole mesh on the configured broker, on topics of its own so that runs
//! never mix. An AI service signs anomalies, evidence and policies (plus a few tampered records);
//! two validators verify them in per-node groups; a backend signs commits and policy updates;
//! an agent applies policy updates and acknowledges them; the AI service reads commits and acks.
//! Ends with a summary table and what the metrics endpoint shows.

use super::sample;
use super::{config, CliResult, Exit};
use meshbus::config::Config;
use meshbus::consumer::{Consumed, Consumer, ConsumerOptions, Stats};
use meshbus::contract::messages::{AnomalyEvent, PolicyAckEvent};
use meshbus::contract::{
    keys, Clock as _, FixedClock, Kind, Message, Signer, SystemClock, TrustStore, Verifier,
    VerifierConfig,
};
use meshbus::kafka::Client;
use meshbus::metrics::http;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use prost::Message as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Valid messages the AI service sends per kind (anomaly, evidence, policy).
    #[arg(long, default_value_t = 20)]
    pub records: u64,
    /// Give up waiting for the mesh after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// A boxed handler closure.
type BoxedHandler = Box<dyn Fn(Consumed) -> meshbus::consumer::HandlerFuture + Send + Sync>;

fn bump(c: &Counts, key: impl Into<String>) {
    *c.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.into())
        .or_default() += 1;
}

fn get(c: &Counts, key: &str) -> u64 {
    c.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .copied()
        .unwrap_or(0)
}

struct Running {
    name: String,
    stats: Arc<Stats>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), meshbus::consumer::ConsumeError>>,
}

async fn start(
    name: &str,
    config: &Config,
    options: ConsumerOptions,
    verifier: Verifier,
    metrics: &Arc<Metrics>,
    handlers: Vec<(Kind, BoxedHandler)>,
) -> Result<Running, String> {
    let mut c = Consumer::connect(config.clone(), Arc::new(verifier), metrics.clone(), options)
        .await
        .map_err(|e| e.to_string())?;
    for (kind, h) in handlers {
        c = c.handle(kind, move |r: Consumed| h(r));
    }
    let stats = c.stats();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(c.run(async move {
        let _ = rx.await;
    }));
    Ok(Running {
        name: name.to_string(),
        stats,
        stop,
        task,
    })
}

fn counting(counts: &Counts, prefix: &str) -> BoxedHandler {
    let (counts, prefix) = (counts.clone(), prefix.to_string());
    Box::new(move |r: Consumed| {
        bump(&counts, format!("{prefix}.{}", r.message.kind().name()));
        Box::pin(async { Ok(()) })
    })
}

/// Waits for `cond` until the deadline or a SIGTERM/SIGINT (then the demo winds down
/// gracefully and reports itself incomplete).
async fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline && !super::signals::is_stop_requested() {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

/// Runs the demo.
pub async fn run(
    a: DemoArgs,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
) -> CliResult {
    let n = a.records.max(1);
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut config = config()?;
    let run = format!("{:x}", SystemClock.now_ms());
    for kind in Kind::ALL {
        config
            .topics
            .insert(kind, format!("demo-{run}.{}", kind.default_topic()));
    }
    config.dlq_topic = format!("demo-{run}.ai.dlq.v1");
    config.consumer_group = format!("demo-{run}");
    let metrics_addr = match metrics_addr {
        Some(a) => a,
        None => http::serve(
            "127.0.0.1:0".parse().expect("address"),
            metrics.clone(),
            Default::default(),
        )
        .await
        .map_err(|e| format!("metrics endpoint: {e}"))?,
    };
    eprintln!("demo run {run}: topics demo-{run}.*, metrics on http://{metrics_addr}/metrics");
    let client = Client::connect(&config).await.map_err(|e| e.to_string())?;
    for t in config.topics.values().chain([&config.dlq_topic]) {
        client.ensure_topic(t, 3).await.map_err(|e| e.to_string())?;
    }

    // Keys of the three roles, and a rogue backend.
    let key = || keys::generate_signing_key().map_err(|e| e.to_string());
    // Signers use the configured control signing domains (CONTROL_*_SIGNING_DOMAIN).
    let signer = |id| -> Result<Arc<Signer>, String> {
        Ok(Arc::new(
            Signer::new(key()?, id).with_domains(config.signing_domains.clone()),
        ))
    };
    let ai = signer(7)?;
    let backend = signer(1)?;
    let agent = signer(9)?;
    let rogue = signer(66)?;
    // Verifiers use the configured skews and domains; the policy allowlist is the demo AI's key.
    let verifier_config = || VerifierConfig {
        policy_allowlist: Some([ai.public_key()].into_iter().collect()),
        ..config.verifier_config()
    };
    let backend_trust = || TrustStore::from_keys([backend.public_key()]);
    let producer = |s: &Arc<Signer>, c: &Config| {
        Arc::new(Producer::new(
            client.clone(),
            c.clone(),
            Some(s.clone()),
            metrics.clone(),
        ))
    };
    let ai_out = producer(&ai, &config);
    let backend_out = producer(&backend, &config);
    let rogue_out = producer(&rogue, &config);
    let agent_out = producer(&agent, &config);

    let counts: Counts = Arc::default();
    let mut running = Vec::new();
    // Two validators, one group per node: each verifies every ai.* record.
    for node in [1u32, 2] {
        let mut c = config.clone();
        c.node_id = node;
        let name = format!("validator-{node}");
        running.push(
            start(
                &name,
                &c,
                ConsumerOptions::validator(&c),
                Verifier::new(verifier_config(), backend_trust()),
                &metrics,
                [Kind::Anomaly, Kind::Evidence, Kind::Policy]
                    .into_iter()
                    .map(|k| (k, counting(&counts, &name)))
                    .collect(),
            )
            .await?,
        );
    }
    // The agent applies policy updates and acknowledges them (signed ack headers).
    let applied = Arc::new(AtomicU64::new(0));
    {
        let (out, applied) = (agent_out.clone(), applied.clone());
        let handler: BoxedHandler = Box::new(move |r: Consumed| {
            let (out, applied) = (out.clone(), applied.clone());
            Box::pin(async move {
                let Message::PolicyUpdate(u) = r.message else {
                    return Err("not a policy update".to_string());
                };
                applied.fetch_add(1, Ordering::Relaxed);
                let ack = PolicyAckEvent {
                    policy_id: u.policy_id,
                    result: "applied".into(),
                    applied_at: SystemClock.now_secs(),
                    acked_at: SystemClock.now_secs(),
                    controller_instance: "agent-9".into(),
                    ..Default::default()
                };
                out.send_policy_ack(ack)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        });
        let mut c = config.clone();
        c.consumer_group = format!("demo-{run}-agent");
        running.push(
            start(
                "agent",
                &c,
                ConsumerOptions::shared(&c),
                Verifier::new(verifier_config(), backend_trust()),
                &metrics,
                vec![(Kind::PolicyUpdate, handler)],
            )
            .await?,
        );
    }
    // The AI service reads commits and acks (acks verified against the agent's key).
    {
        let mut c = config.clone();
        c.consumer_group = format!("demo-{run}-ai");
        let vc = VerifierConfig {
            ack_keys: Some(TrustStore::from_keys([agent.public_key()])),
            ..verifier_config()
        };
        running.push(
            start(
                "ai-feedback",
                &c,
                ConsumerOptions::shared(&c),
                Verifier::new(vc, backend_trust()),
                &metrics,
                vec![
                    (Kind::Commit, counting(&counts, "ai")),
                    (Kind::PolicyAck, counting(&counts, "ai")),
                ],
            )
            .await?,
        );
    }

    // The AI service publishes.
    let sent: Counts = Arc::default();
    let mut anomaly_ids = Vec::new();
    let mut last_anomaly: Option<AnomalyEvent> = None;
    for i in 0..n {
        let m = ai.sign_ai(sample::anomaly(i, 512));
        anomaly_ids.push(m.id.clone());
        ai_out
            .send_message(&Message::Anomaly(m.clone()))
            .await
            .map_err(|e| e.to_string())?;
        last_anomaly = Some(m);
        ai_out
            .send_evidence(sample::evidence(1000 + i, 512))
            .await
            .map_err(|e| e.to_string())?;
        ai_out
            .send_policy(sample::policy(2000 + i, 256))
            .await
            .map_err(|e| e.to_string())?;
    }
    for k in ["anomaly", "evidence", "policy"] {
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.into(), n);
    }
    // Tampered records: each validator must refuse each with its reason.
    let anomaly_topic = config.topic(Kind::Anomaly).to_string();
    let raw = |m: &AnomalyEvent| m.encode_to_vec();
    let mut forged = ai.sign_ai(sample::anomaly(9001, 256));
    forged.signature[0] ^= 0x80;
    let mut altered = ai.sign_ai(sample::anomaly(9002, 256));
    altered.payload.push(b' ');
    let stale_signer = Signer::with_clock(
        key()?,
        7,
        Arc::new(FixedClock::at_secs(SystemClock.now_secs() - 3600)),
    );
    let stale = stale_signer.sign_ai(sample::anomaly(9003, 256));
    let replay = last_anomaly.expect("at least one anomaly");
    let tampered = [
        ("bad_signature", raw(&forged)),
        ("content_hash_mismatch", raw(&altered)),
        ("timestamp_skew", raw(&stale)),
        ("replayed", raw(&replay)),
    ];
    for (_, bytes) in &tampered {
        ai_out
            .send_raw(&anomaly_topic, None, bytes.clone(), BTreeMap::new())
            .await
            .map_err(|e| e.to_string())?;
    }
    let tampered_count = tampered.len() as u64;
    eprintln!("AI service: sent {n} anomalies, {n} evidence, {n} policies and {tampered_count} tampered anomalies");

    // Both validators verify everything valid and refuse the tampered records.
    let validators_done = wait_until(deadline, || {
        running[..2].iter().all(|r| {
            let (_, handled, rejected, _, dead) = r.stats.snapshot();
            handled >= 3 * n && rejected >= tampered_count && dead >= tampered_count
        })
    })
    .await;

    // The backend commits blocks of verified anomalies and issues policy updates.
    let blocks: Vec<_> = anomaly_ids.chunks(10).collect();
    for (h, ids) in blocks.iter().enumerate() {
        let mut c = sample::commit(h as i64 + 1, 0);
        c.anomaly_ids = ids.to_vec();
        c.anomaly_count = ids.len() as u32;
        c.tx_count = c
            .tx_count
            .max(c.anomaly_count + c.evidence_count + c.policy_count);
        backend_out
            .send_commit(c)
            .await
            .map_err(|e| e.to_string())?;
    }
    for i in 0..n {
        backend_out
            .send_policy_update(sample::policy_update(3000 + i, 128))
            .await
            .map_err(|e| e.to_string())?;
    }
    // A policy update from a key nobody trusts.
    rogue_out
        .send_policy_update(sample::policy_update(9999, 128))
        .await
        .map_err(|e| e.to_string())?;
    let commits = blocks.len() as u64;
    eprintln!("backend: sent {commits} commits and {n} policy updates (+1 from an untrusted key)");

    let mesh_done = wait_until(deadline, || {
        get(&counts, "ai.commit") >= commits
            && get(&counts, "ai.policy_ack") >= n
            && running[2].stats.snapshot().2 >= 1
    })
    .await;

    // Stop every role first, then wait for each to commit and leave.
    let mut stopping = Vec::new();
    for r in running {
        let _ = r.stop.send(());
        stopping.push((r.name, r.stats, r.task));
    }
    let mut summary = Vec::new();
    for (name, stats, task) in stopping {
        let _ = task.await;
        summary.push((name, stats.snapshot()));
    }
    for p in [&ai_out, &backend_out, &rogue_out, &agent_out] {
        if let Err(e) = p.close().await {
            eprintln!("demo: closing a producer: {e}");
        }
    }

    // Summary.
    println!();
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>5}",
        "role", "read", "verified", "rejected", "DLQ"
    );
    for (name, (received, handled, rejected, _, dead)) in &summary {
        println!("{name:<14} {received:>6} {handled:>9} {rejected:>9} {dead:>5}");
    }
    println!();
    println!("sent by the AI service: {n} anomalies, {n} evidence, {n} policies, {tampered_count} tampered");
    println!(
        "sent by the backend:    {commits} commits, {n} policy updates, 1 rogue policy update"
    );
    println!(
        "agent applied {} policy updates; AI service saw {} commits and {} verified acks",
        applied.load(Ordering::Relaxed),
        get(&counts, "ai.commit"),
        get(&counts, "ai.policy_ack")
    );
    let scraped = http::get(metrics_addr, "/metrics")
        .await
        .map_err(|e| format!("scraping the metrics endpoint: {e}"))?
        .1;
    println!();
    println!("rejected by reason (kafka_messages_rejected_total, from the metrics endpoint):");
    let mut by_reason: BTreeMap<String, f64> = BTreeMap::new();
    let mut dlq_total = 0.0;
    let mut sent_total = 0.0;
    for line in scraped.lines() {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(v), true) = (value, line.starts_with("kafka_messages_rejected_total{")) {
            if let Some(r) = line
                .split("reason=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            {
                *by_reason.entry(r.to_string()).or_default() += v;
            }
        }
        if let (Some(v), true) = (value, line.starts_with("kafka_dlq_messages_total{")) {
            dlq_total += v;
        }
        if let (Some(v), true) = (value, line.starts_with("kafka_messages_sent_total{")) {
            sent_total += v;
        }
    }
    for (reason, v) in &by_reason {
        println!("  {reason:<24} {v:>4}");
    }
    println!("kafka_messages_sent_total (all topics): {sent_total}");
    println!("kafka_dlq_messages_total (all topics):  {dlq_total}");
    println!(
        "kafka_circuit_breaker_state:            {}",
        scraped
            .lines()
            .find(|l| l.starts_with("kafka_circuit_breaker_state "))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
    );

    let expected_reasons = tampered
        .iter()
        .all(|(r, _)| by_reason.get(*r) == Some(&2.0))
        && by_reason.get("untrusted_key") == Some(&1.0);
    let ok = validators_done && mesh_done && expected_reasons && dlq_total == 9.0;
    println!();
    if ok {
        println!("demo: the mesh verified everything valid, refused every tampered record with its reason, and dead-lettered it");
        Ok(Exit::Ok)
    } else {
        println!("demo: INCOMPLETE (validators done: {validators_done}, mesh done: {mesh_done}, reasons as expected: {expected_reasons}, DLQ total {dlq_total} of 9)");
        Ok(Exit::Refused)
    }
}
