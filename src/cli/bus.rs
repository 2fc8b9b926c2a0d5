//! `meshbus produce` and `meshbus consume`, on the library's producer and consumer.

use super::{config, progress, signing_key, trust_store, CliResult, Exit};
use meshbus::consumer::{Consumed, Consumer, ConsumerOptions, StartFrom};
use meshbus::contract::{json, sample, Kind, Message, Signer, Verifier};
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Message kind.
    #[arg(long)]
    pub kind: Kind,
    /// Signing key (PKCS#8 PEM, raw seed or hex).
    #[arg(long, env = "MESHBUS_SIGNING_KEY")]
    pub key: PathBuf,
    /// Messages as proto3 JSON, one object per line (`-`: stdin).
    #[arg(long, conflicts_with = "sample")]
    pub json: Option<PathBuf>,
    /// Instead of JSON, send this many generated sample messages.
    #[arg(long)]
    pub sample: Option<u64>,
    /// Payload size of generated samples, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Print deliveries as JSON lines.
    #[arg(long = "json-output")]
    pub json_output: bool,
}

fn sample_message(kind: Kind, n: u64, size: usize) -> Message {
    match kind {
        Kind::Anomaly => Message::Anomaly(sample::anomaly(n, size)),
        Kind::Evidence => Message::Evidence(sample::evidence(n, size)),
        Kind::Policy => Message::Policy(sample::policy(n, size)),
        Kind::Commit => Message::Commit(sample::commit(n as i64 + 1, size)),
        Kind::PolicyUpdate => Message::PolicyUpdate(sample::policy_update(n, size)),
        Kind::Reputation => Message::Reputation(sample::reputation(n, size)),
        Kind::EvidenceRequest => Message::EvidenceRequest(sample::evidence_request(n, size)),
        Kind::PolicyAck => Message::PolicyAck(meshbus::contract::messages::PolicyAckEvent {
            policy_id: format!("policy-{n}"),
            result: "applied".into(),
            acked_at: 1,
            ..Default::default()
        }),
    }
}

/// Signs and sends; exit 1 if any message was not delivered.
pub async fn produce(a: ProduceArgs, metrics: Arc<Metrics>) -> CliResult {
    let config = config()?;
    let signer = Arc::new(
        Signer::new(signing_key(&a.key)?, config.node_id)
            .with_domains(config.signing_domains.clone()),
    );
    let messages: Vec<Message> = match (a.sample, &a.json) {
        (Some(n), _) => (0..n).map(|i| sample_message(a.kind, i, a.size)).collect(),
        (None, path) => {
            let input = super::read_input(path.as_deref())?;
            let mut out = Vec::new();
            for (i, line) in input.lines().enumerate() {
                let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                out.push(
                    json::from_json(a.kind, &line).map_err(|e| format!("line {}: {e}", i + 1))?,
                );
            }
            out
        }
    };
    let client = Client::connect(&config).await.map_err(|e| e.to_string())?;
    let producer = Arc::new(Producer::new(client, config, Some(signer), metrics));
    let done = progress("sent", messages.len() as u64);
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    for m in messages {
        let (p, done, failed, json_out) = (
            producer.clone(),
            done.clone(),
            failed.clone(),
            a.json_output,
        );
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        tasks.spawn(async move {
            let _permit = permit;
            match p.sign_and_send(m).await {
                Ok(d) if json_out => println!(
                    "{}",
                    serde_json::json!({"topic": d.topic, "partition": d.partition, "offset": d.offset})
                ),
                Ok(d) => println!("{}/{}@{}", d.topic, d.partition, d.offset),
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("not delivered: {e}");
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Err(e) = producer.close().await {
        eprintln!("closing the producer: {e}");
    }
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "delivered {}, failed {failed}",
        done.load(Ordering::Relaxed) - failed
    );
    Ok(if failed == 0 { Exit::Ok } else { Exit::Refused })
}

/// Arguments of `consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Kinds to consume (repeatable); their configured topics are subscribed.
    #[arg(long, required = true)]
    pub kind: Vec<Kind>,
    /// Consumer group (default: KAFKA_CONSUMER_GROUP, or the per-node group with --validator).
    #[arg(long)]
    pub group: Option<String>,
    /// Use the validator's per-node group `<KAFKA_CONSUMER_GROUP>-node-<NODE_ID>`.
    #[arg(long)]
    pub validator: bool,
    /// Start new groups at the end instead of the beginning.
    #[arg(long)]
    pub latest: bool,
    /// Trusted control keys (PEM file, directory or hex; repeatable).
    #[arg(long)]
    pub trust: Vec<String>,
    /// Trusted policy-ack signers (repeatable).
    #[arg(long)]
    pub ack_key: Vec<String>,
    /// Print JSON lines instead of one summary line per record.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many records (verified or dead-lettered).
    #[arg(long)]
    pub max: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
}

fn summary_line(r: &Consumed) -> String {
    use meshbus::contract::Message as M;
    let what = match &r.message {
        M::Anomaly(m) => format!(
            "anomaly id={} type={} severity={}",
            m.id, m.r#type, m.severity
        ),
        M::Evidence(m) => format!("evidence id={} type={}", m.id, m.evidence_type),
        M::Policy(m) => format!("policy id={} action={}", m.id, m.action),
        M::Commit(m) => format!("commit height={}", m.height),
        M::PolicyUpdate(m) => format!("policy_update policy_id={}", m.policy_id),
        M::Reputation(m) => format!("reputation message={} score={}", m.ai_message_id, m.score),
        M::EvidenceRequest(m) => format!("evidence_request id={}", m.request_id),
        M::PolicyAck(m) => format!("policy_ack policy_id={} result={}", m.policy_id, m.result),
    };
    format!("{}/{}@{} ok {what}", r.topic, r.partition, r.offset)
}

/// Runs a verifying consumer until `--max`, `--seconds` or Ctrl-C.
pub async fn consume(a: ConsumeArgs, metrics: Arc<Metrics>) -> CliResult {
    let config = config()?;
    let mut vconfig = config.verifier_config();
    if !a.ack_key.is_empty() {
        vconfig.ack_keys = Some(trust_store(&a.ack_key)?);
    }
    let verifier = Arc::new(Verifier::new(vconfig, trust_store(&a.trust)?));
    let mut options = match (&a.group, a.validator) {
        (Some(g), _) => ConsumerOptions::new(g.clone()),
        (None, true) => ConsumerOptions::validator(&config),
        (None, false) => ConsumerOptions::shared(&config),
    };
    if a.latest {
        options.start_from = StartFrom::Latest;
    }
    let mut consumer = Consumer::connect(config, verifier, metrics, options)
        .await
        .map_err(|e| e.to_string())?;
    let json_out = a.json;
    for kind in &a.kind {
        consumer = consumer.handle(*kind, move |r: Consumed| async move {
            if json_out {
                println!(
                    "{}",
                    serde_json::json!({
                        "topic": r.topic, "partition": r.partition, "offset": r.offset,
                        "kind": r.message.kind().name(), "message": json::to_json(&r.message),
                    })
                );
            } else {
                println!("{}", summary_line(&r));
            }
            Ok(())
        });
    }
    let stats = consumer.stats();
    let (max, seconds) = (a.max, a.seconds);
    let watch = stats.clone();
    let stop = async move {
        let limit = async {
            loop {
                let (_, handled, _, _, dead) = watch.snapshot();
                if max.is_some_and(|m| handled + dead >= m) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let timer = async {
            match seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = limit => {}
            _ = timer => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    consumer.run(stop).await.map_err(|e| e.to_string())?;
    let (received, handled, rejected, handler_failed, dead) = stats.snapshot();
    eprintln!("received {received}, verified and handled {handled}, rejected {rejected}, handler failures {handler_failed}, dead-lettered {dead}");
    Ok(Exit::Ok)
}
