//! `meshbus produce` and `meshbus consume`, on the library's producer and consumer.

use super::sample;
use super::{config, progress, signals, signing_key, trust_store, CliResult, Exit};
use meshbus::config::StartFrom;
use meshbus::consumer::Consumed;
use meshbus::contract::{json, Kind, Message, Verifier};
use meshbus::mesh::Mesh;
use meshbus::metrics::http::ReadySlot;
use meshbus::metrics::Metrics;
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

/// The messages to send: generated samples, or proto3 JSON lines.
fn messages(a: &ProduceArgs) -> Result<Vec<Message>, String> {
    Ok(match (a.sample, &a.json) {
        (Some(n), _) => (0..n).map(|i| sample::message(a.kind, i, a.size)).collect(),
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
    })
}

/// Signs and sends; exit 1 if any message was not delivered (failed, or left unsent by a
/// SIGTERM/SIGINT stop).
pub(crate) async fn produce(
    a: ProduceArgs,
    metrics: Arc<Metrics>,
    ready: Arc<ReadySlot>,
) -> CliResult {
    let config = config()?;
    let key = signing_key(&a.key)?;
    let messages = messages(&a)?;
    let timeout = config.shutdown_timeout;
    let mesh = Mesh::builder(config)
        .signing_key(key)
        .metrics(metrics)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    ready.set(mesh.readiness());
    let total = messages.len() as u64;
    let done = progress("sent", total);
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut accepted = 0u64;
    for m in messages {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore open"),
            _ = signals::stop_requested() => break,
        };
        accepted += 1;
        let (p, done, failed, json_out) = (
            mesh.producer().clone(),
            done.clone(),
            failed.clone(),
            a.json_output,
        );
        tasks.spawn(async move {
            let _permit = permit;
            // A closed stdout loses the listing, never the sends.
            match p.sign_and_send(m).await {
                Ok(d) if json_out => {
                    super::emit(
                        &serde_json::json!({"topic": d.topic, "partition": d.partition, "offset": d.offset})
                            .to_string(),
                    );
                }
                Ok(d) => {
                    super::emit(&format!("{}/{}@{}", d.topic, d.partition, d.offset));
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("not delivered: {e}");
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    // Wait for the sends, or stop early on SIGTERM/SIGINT: the stop flushes what is in
    // flight, and sends not yet begun are refused (and counted as failed).
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = signals::stop_requested() => {}
    }
    let report = mesh.shutdown(timeout).await;
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let failed = failed.load(Ordering::Relaxed);
    let delivered = done.load(Ordering::Relaxed) - failed;
    eprintln!(
        "delivered {delivered}, failed {failed}, not sent {}",
        total - accepted
    );
    if !report.is_clean() {
        eprintln!("stop: {report}");
    }
    Ok(if delivered == total && report.is_clean() {
        Exit::Ok
    } else {
        Exit::Refused
    })
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
    /// Trusted control keys (PEM file, directory or hex; repeatable). Reloaded when their files
    /// change and on SIGHUP; a bad reload keeps the last good store.
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
    let what = sample::summary(&r.message);
    format!("{}/{}@{} ok {what}", r.topic, r.partition, r.offset)
}

/// Runs a verifying consumer until `--max`, `--seconds`, SIGTERM or SIGINT, then stops
/// gracefully: exit 0 when everything handled was committed, 1 when a partition ended stalled
/// on an unwritten dead letter or standard output closed (the records not yet printed stay
/// uncommitted), 3 when the consumer failed.
pub(crate) async fn consume(
    a: ConsumeArgs,
    metrics: Arc<Metrics>,
    ready: Arc<ReadySlot>,
) -> CliResult {
    let mut config = config()?;
    let mut vconfig = config.verifier_config();
    if !a.ack_key.is_empty() {
        vconfig.ack_keys = Some(trust_store(&a.ack_key)?);
    }
    // The trust store is loaded by the mesh, which reloads it on change and on SIGHUP.
    let verifier = Verifier::new(vconfig, Default::default());
    let group = match (&a.group, a.validator) {
        (Some(g), _) => g.clone(),
        (None, true) => config.validator_group(),
        (None, false) => config.shared_group(),
    };
    if a.latest {
        config.consumer.start_from = StartFrom::Latest;
    }
    let timeout = config.shutdown_timeout;
    let allowlist_file = config.verification.policy_allowlist_file.clone();
    let mut mesh = Mesh::builder(config)
        .verifier(verifier)
        .metrics(metrics)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    if !a.trust.is_empty() {
        mesh.watch_trust(a.trust.clone(), signals::reload_requests())
            .map_err(|e| e.to_string())?;
    }
    if let Some(path) = allowlist_file {
        mesh.watch_policy_allowlist(path, signals::reload_requests())
            .map_err(|e| e.to_string())?;
    }
    let mut consumer = mesh.consumer(group).map_err(|e| e.to_string())?;
    let json_out = a.json;
    // Set when stdout is gone (the reader of a pipe quit): the command stops, and the record
    // in hand, not delivered to anyone, stays uncommitted.
    let output_closed = Arc::new(tokio::sync::Notify::new());
    let mut stdout_lost = false;
    for kind in &a.kind {
        let closed = output_closed.clone();
        consumer = consumer.handle(*kind, move |r: Consumed| {
            let closed = closed.clone();
            async move {
                let line = if json_out {
                    serde_json::json!({
                        "topic": r.topic, "partition": r.partition, "offset": r.offset,
                        "kind": r.message.kind().name(), "message": json::to_json(&r.message),
                    })
                    .to_string()
                } else {
                    summary_line(&r)
                };
                if super::emit(&line) {
                    Ok(())
                } else {
                    closed.notify_one();
                    Err("standard output is closed".into())
                }
            }
        });
    }
    let stats = mesh.register(consumer);
    ready.set(mesh.readiness());
    mesh.start();
    let (max, seconds) = (a.max, a.seconds);
    let watch = stats.clone();
    let limit = async {
        loop {
            let meshbus::consumer::StatsSnapshot {
                handled,
                dead_lettered: dead,
                ..
            } = watch.snapshot();
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
        _ = signals::stop_requested() => {}
        _ = mesh.consumer_ended() => {}
        _ = output_closed.notified() => {
            eprintln!("meshbus: standard output closed: stopping");
            stdout_lost = true;
        }
    }
    let report = mesh.shutdown(timeout).await;
    let meshbus::consumer::StatsSnapshot {
        received,
        handled,
        rejected,
        handler_failed,
        dead_lettered: dead,
        ..
    } = stats.snapshot();
    eprintln!("received {received}, verified and handled {handled}, rejected {rejected}, handler failures {handler_failed}, dead-lettered {dead}");
    if !report.errors.is_empty() {
        return Err(report.errors.join("; "));
    }
    if !report.is_clean() {
        eprintln!("meshbus: stop was not clean: {report}");
        return Ok(Exit::Refused);
    }
    // Records were left undelivered (uncommitted, for the next member).
    Ok(if stdout_lost { Exit::Refused } else { Exit::Ok })
}
