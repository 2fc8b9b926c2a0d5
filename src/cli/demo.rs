//! `meshbus demo`: the whole mesh on the configured broker, on topics of its own so that runs
//! never mix, built from the library's roles (`meshbus::mesh::roles`). An AI service signs
//! anomalies, evidence and policies (plus a few tampered records); two validators verify them
//! in per-node groups; a backend signs commits and policy updates (and a rogue key sends one);
//! an agent applies policy updates and acknowledges them; the AI service reads commits and
//! acks. Ends with a summary table and what the metrics endpoint shows.

use super::sample;
use super::{config, CliResult, Exit};
use meshbus::config::Config;
use meshbus::consumer::{Consumed, HandlerResult, Stats};
use meshbus::contract::AnomalyEvent;
use meshbus::contract::{
    keys, Clock as _, FixedClock, Kind, Message, Signer, SystemClock, TrustStore, Verifier,
};
use meshbus::kafka::Client;
use meshbus::mesh::roles::{self, Role};
use meshbus::mesh::Mesh;
use meshbus::metrics::http;
use meshbus::metrics::Metrics;
use prost::Message as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A handler that counts what it sees under `prefix.kind`.
fn counting(
    counts: &Counts,
    prefix: &str,
) -> impl Fn(Consumed) -> std::future::Ready<HandlerResult> + Clone + Send + Sync + 'static {
    let (counts, prefix) = (counts.clone(), prefix.to_string());
    move |r: Consumed| {
        bump(&counts, format!("{prefix}.{}", r.message.kind().name()));
        std::future::ready(Ok(()))
    }
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

/// The demo's configuration: the environment's, on topics and groups of this run only.
async fn demo_config(
    metrics: &Arc<Metrics>,
    addr: Option<SocketAddr>,
) -> Result<(Config, SocketAddr), String> {
    let mut config = config()?;
    let run = format!("{:x}", SystemClock.now_ms());
    for kind in Kind::ALL {
        config
            .topics
            .insert(kind, format!("demo-{run}.{}", kind.default_topic()));
    }
    config.dlq_topic = format!("demo-{run}.ai.dlq.v1");
    config.consumer_group = format!("demo-{run}");
    let addr = match addr {
        Some(a) => a,
        None => http::serve(
            "127.0.0.1:0".parse().expect("address"),
            metrics.clone(),
            Default::default(),
        )
        .await
        .map_err(|e| format!("metrics endpoint: {e}"))?,
    };
    eprintln!("demo run {run}: topics demo-{run}.*, metrics on http://{addr}/metrics");
    let client = Client::connect(&config).await.map_err(|e| e.to_string())?;
    for t in config.topics.values().chain([&config.dlq_topic]) {
        client.ensure_topic(t, 3).await.map_err(|e| e.to_string())?;
    }
    Ok((config, addr))
}

/// The keys of the roles, and of a rogue backend nobody trusts.
struct Keys {
    ai: ed25519_dalek::SigningKey,
    backend: ed25519_dalek::SigningKey,
    agent: ed25519_dalek::SigningKey,
    rogue: ed25519_dalek::SigningKey,
    domains: meshbus::contract::SigningDomains,
}

/// The AI service's node id, and the one its records signed outside its producer use (each
/// signer numbers its nonces by node id, so two signers of one key never collide).
const AI_NODE: u32 = 7;
const AI_HAND_SIGNED: u32 = 77;

impl Keys {
    fn generate(config: &Config) -> Result<Keys, String> {
        let key = || keys::generate_signing_key().map_err(|e| e.to_string());
        Ok(Keys {
            ai: key()?,
            backend: key()?,
            agent: key()?,
            rogue: key()?,
            domains: config.signing_domains.clone(),
        })
    }

    /// A signer of `key` as node `id`, with the configured control signing domains
    /// (CONTROL_*_SIGNING_DOMAIN).
    fn signer(&self, key: &ed25519_dalek::SigningKey, id: u32) -> Signer {
        Signer::new(key.clone(), id, self.domains.clone())
    }

    /// A verifier with the configured skews and domains, the demo AI's key as the policy
    /// allowlist, and the backend as the trusted control signer.
    fn verifier(&self, config: &Config, ack_keys: Option<TrustStore>) -> Verifier {
        let vc = {
            let mut vc = config.verifier_config();
            vc.policy_allowlist = Some([self.ai.verifying_key().to_bytes()].into_iter().collect());
            vc.ack_keys = ack_keys;
            vc
        };
        let trust = TrustStore::from_keys([self.backend.verifying_key().to_bytes()]);
        Verifier::new(vc, trust)
    }
}

/// Every role of the demo.
struct Cast {
    validators: Vec<Role>,
    agent: Role,
    ai: Role,
    backend: Role,
    rogue: Role,
    counts: Counts,
    applied: Arc<AtomicU64>,
}

async fn start_cast(config: &Config, metrics: &Arc<Metrics>, keys: &Keys) -> Result<Cast, String> {
    let e = |e: meshbus::mesh::MeshError| e.to_string();
    // Each role as its own node: its node id numbers its signer's nonces.
    let role = |node: u32, group: Option<&str>| {
        let mut c = config.clone();
        c.node_id = node;
        if let Some(g) = group {
            c.consumer_group = format!("{}-{g}", config.consumer_group);
        }
        c
    };
    let counts: Counts = Arc::default();
    let mut validators = Vec::new();
    for node in [1u32, 2] {
        let c = role(node, None);
        let name = format!("validator-{node}");
        let builder = Mesh::builder(c.clone())
            .verifier(keys.verifier(&c, None))
            .metrics(metrics.clone());
        validators.push(
            roles::validator(builder, counting(&counts, &name))
                .await
                .map_err(e)?,
        );
    }
    let applied = Arc::new(AtomicU64::new(0));
    let c = role(9, Some("agent"));
    let builder = Mesh::builder(c.clone())
        .signing_key(keys.agent.clone())
        .verifier(keys.verifier(&c, None))
        .metrics(metrics.clone());
    let agent = roles::agent(builder, applied.clone()).await.map_err(e)?;
    let c = role(AI_NODE, Some("ai"));
    let acks = Some(TrustStore::from_keys([keys
        .agent
        .verifying_key()
        .to_bytes()]));
    let builder = Mesh::builder(c.clone())
        .signing_key(keys.ai.clone())
        .verifier(keys.verifier(&c, acks))
        .metrics(metrics.clone());
    let ai = roles::ai_service(builder, counting(&counts, "ai"))
        .await
        .map_err(e)?;
    let producing = |node: u32, key: &ed25519_dalek::SigningKey| {
        Mesh::builder(role(node, None))
            .signing_key(key.clone())
            .metrics(metrics.clone())
    };
    let backend = roles::backend(producing(1, &keys.backend))
        .await
        .map_err(e)?;
    let rogue = roles::backend(producing(66, &keys.rogue))
        .await
        .map_err(e)?;
    Ok(Cast {
        validators,
        agent,
        ai,
        backend,
        rogue,
        counts,
        applied,
    })
}

/// Anomalies a validator must refuse, each with its reason (each signed by a signer of its
/// own, so no nonce of theirs can collide with a valid record's).
fn tampered(keys: &Keys, replay: &AnomalyEvent) -> Vec<(&'static str, Vec<u8>)> {
    let mut forged = keys
        .signer(&keys.ai, AI_HAND_SIGNED + 1)
        .sign_ai(sample::anomaly(9001, 256));
    let mut signature = forged.signature.to_vec();
    signature[0] ^= 0x80;
    forged.signature = signature.into();
    let mut altered = keys
        .signer(&keys.ai, AI_HAND_SIGNED + 2)
        .sign_ai(sample::anomaly(9002, 256));
    altered.payload = [&altered.payload[..], b" "].concat().into();
    let an_hour_ago = Arc::new(FixedClock::at_secs(SystemClock.now_secs() - 3600));
    let stale = Signer::with_clock(
        keys.ai.clone(),
        AI_HAND_SIGNED + 3,
        keys.domains.clone(),
        an_hour_ago,
    )
    .sign_ai(sample::anomaly(9003, 256));
    vec![
        ("bad_signature", forged.encode_to_vec()),
        ("content_hash_mismatch", altered.encode_to_vec()),
        ("timestamp_skew", stale.encode_to_vec()),
        ("replayed", replay.encode_to_vec()),
    ]
}

/// The AI service publishes `n` of each kind, then the tampered records; returns the anomaly
/// ids and the tampered records' reasons.
async fn publish_ai(
    cast: &Cast,
    keys: &Keys,
    config: &Config,
    n: u64,
) -> Result<(Vec<String>, Vec<&'static str>), String> {
    let out = cast.ai.producer();
    let e = |e: meshbus::producer::SendError| e.to_string();
    let hand = keys.signer(&keys.ai, AI_HAND_SIGNED);
    let mut ids = Vec::new();
    let mut last = None;
    for i in 0..n {
        let m = hand.sign_ai(sample::anomaly(i, 512));
        ids.push(m.id.clone());
        out.send_message(&Message::Anomaly(m.clone()))
            .await
            .map_err(e)?;
        last = Some(m);
        out.send_evidence(sample::evidence(1000 + i, 512))
            .await
            .map_err(e)?;
        out.send_policy(sample::policy(2000 + i, 256))
            .await
            .map_err(e)?;
    }
    let bad = tampered(keys, &last.expect("at least one anomaly"));
    let topic = config.topic(Kind::Anomaly);
    for (_, bytes) in &bad {
        out.send_raw(topic, None, bytes.clone(), BTreeMap::new())
            .await
            .map_err(e)?;
    }
    eprintln!(
        "AI service: sent {n} anomalies, {n} evidence, {n} policies and {} tampered anomalies",
        bad.len()
    );
    Ok((ids, bad.into_iter().map(|(r, _)| r).collect()))
}

/// The backend commits blocks of verified anomalies and issues policy updates; the rogue
/// sends one update nobody trusts. Returns the number of commits.
async fn publish_backend(cast: &Cast, anomaly_ids: &[String], n: u64) -> Result<u64, String> {
    let e = |e: meshbus::producer::SendError| e.to_string();
    let blocks: Vec<_> = anomaly_ids.chunks(10).collect();
    for (h, ids) in blocks.iter().enumerate() {
        let mut c = sample::commit(h as u64 + 1, 0);
        c.anomaly_ids = ids.to_vec();
        c.anomaly_count = ids.len() as u32;
        c.tx_count = c
            .tx_count
            .max(c.anomaly_count + c.evidence_count + c.policy_count);
        cast.backend.producer().send_commit(c).await.map_err(e)?;
    }
    for i in 0..n {
        cast.backend
            .producer()
            .send_policy_update(sample::policy_update(3000 + i, 128))
            .await
            .map_err(e)?;
    }
    cast.rogue
        .producer()
        .send_policy_update(sample::policy_update(9999, 128))
        .await
        .map_err(e)?;
    let commits = blocks.len() as u64;
    eprintln!("backend: sent {commits} commits and {n} policy updates (+1 from an untrusted key)");
    Ok(commits)
}

/// Stops every role (each commits and leaves); their names and counters.
async fn stop_cast(cast: Cast) -> Vec<(String, Arc<Stats>)> {
    let mut summary = Vec::new();
    let named = cast
        .validators
        .into_iter()
        .enumerate()
        .map(|(i, r)| (format!("validator-{}", i + 1), r))
        .chain([
            ("agent".to_string(), cast.agent),
            ("ai-feedback".to_string(), cast.ai),
        ]);
    for (name, role) in named {
        let stats = role.stats();
        let report = role.stop(Duration::from_secs(20)).await;
        if !report.is_clean() {
            eprintln!("demo: {name} stopped: {report}");
        }
        summary.push((name, stats));
    }
    for role in [cast.backend, cast.rogue] {
        role.stop(Duration::from_secs(20)).await;
    }
    summary
}

/// Sums of metric families as a scraper sees them: rejected by reason, DLQ, sent, breaker.
struct Scraped {
    by_reason: BTreeMap<String, f64>,
    dlq_total: f64,
    sent_total: f64,
    breaker: String,
}

fn read_scrape(scraped: &str) -> Scraped {
    let mut s = Scraped {
        by_reason: BTreeMap::new(),
        dlq_total: 0.0,
        sent_total: 0.0,
        breaker: "?".into(),
    };
    for line in scraped.lines() {
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let Some(v) = value else { continue };
        if line.starts_with("kafka_messages_rejected_total{") {
            if let Some(r) = line
                .split("reason=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            {
                *s.by_reason.entry(r.to_string()).or_default() += v;
            }
        } else if line.starts_with("kafka_dlq_messages_total{") {
            s.dlq_total += v;
        } else if line.starts_with("kafka_messages_sent_total{") {
            s.sent_total += v;
        } else if line.starts_with("kafka_circuit_breaker_state ") {
            s.breaker = v.to_string();
        }
    }
    s
}

/// Prints the summary table and what the metrics endpoint shows.
fn print_summary(
    summary: &[(String, Arc<Stats>)],
    n: u64,
    commits: u64,
    cast_counts: (&Counts, u64),
    tampered: usize,
    s: &Scraped,
) {
    println!();
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>5}",
        "role", "read", "verified", "rejected", "DLQ"
    );
    for (name, stats) in summary {
        let meshbus::consumer::StatsSnapshot {
            received,
            handled,
            rejected,
            dead_lettered: dead,
            ..
        } = stats.snapshot();
        println!("{name:<14} {received:>6} {handled:>9} {rejected:>9} {dead:>5}");
    }
    println!();
    println!(
        "sent by the AI service: {n} anomalies, {n} evidence, {n} policies, {tampered} tampered"
    );
    println!(
        "sent by the backend:    {commits} commits, {n} policy updates, 1 rogue policy update"
    );
    let (counts, applied) = cast_counts;
    println!(
        "agent applied {applied} policy updates; AI service saw {} commits and {} verified acks",
        get(counts, "ai.commit"),
        get(counts, "ai.policy_ack")
    );
    println!();
    println!("rejected by reason (kafka_messages_rejected_total, from the metrics endpoint):");
    for (reason, v) in &s.by_reason {
        println!("  {reason:<24} {v:>4}");
    }
    println!("kafka_messages_sent_total (all topics): {}", s.sent_total);
    println!("kafka_dlq_messages_total (all topics):  {}", s.dlq_total);
    println!("kafka_circuit_breaker_state:            {}", s.breaker);
}

/// Runs the demo.
pub(crate) async fn run(
    a: DemoArgs,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
) -> CliResult {
    let n = a.records.max(1);
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let (config, metrics_addr) = demo_config(&metrics, metrics_addr).await?;
    let keys = Keys::generate(&config)?;
    let cast = start_cast(&config, &metrics, &keys).await?;
    let (anomaly_ids, reasons) = publish_ai(&cast, &keys, &config, n).await?;
    let bad = reasons.len() as u64;
    // Both validators verify everything valid and refuse the tampered records.
    let validators_done = wait_until(deadline, || {
        cast.validators.iter().all(|r| {
            let meshbus::consumer::StatsSnapshot {
                handled,
                rejected,
                dead_lettered: dead,
                ..
            } = r.stats().snapshot();
            handled >= 3 * n && rejected >= bad && dead >= bad
        })
    })
    .await;
    let commits = publish_backend(&cast, &anomaly_ids, n).await?;
    let mesh_done = wait_until(deadline, || {
        get(&cast.counts, "ai.commit") >= commits
            && get(&cast.counts, "ai.policy_ack") >= n
            && cast.agent.stats().snapshot().rejected >= 1
    })
    .await;
    let (counts, applied) = (cast.counts.clone(), cast.applied.clone());
    let summary = stop_cast(cast).await;
    let scraped = http::get(metrics_addr, "/metrics")
        .await
        .map_err(|e| format!("scraping the metrics endpoint: {e}"))?
        .1;
    let s = read_scrape(&scraped);
    print_summary(
        &summary,
        n,
        commits,
        (&counts, applied.load(Ordering::Relaxed)),
        reasons.len(),
        &s,
    );
    let expected_reasons = reasons.iter().all(|r| s.by_reason.get(*r) == Some(&2.0))
        && s.by_reason.get("untrusted_key") == Some(&1.0);
    let ok = validators_done && mesh_done && expected_reasons && s.dlq_total == 9.0;
    println!();
    if ok {
        println!("demo: the mesh verified everything valid, refused every tampered record with its reason, and dead-lettered it");
        Ok(Exit::Ok)
    } else {
        println!("demo: INCOMPLETE (validators done: {validators_done}, mesh done: {mesh_done}, reasons as expected: {expected_reasons}, DLQ total {} of 9)", s.dlq_total);
        Ok(Exit::Refused)
    }
}
