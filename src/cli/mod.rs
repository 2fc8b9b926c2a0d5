//! Command-line interface. One file per family of subcommands; everything that checks or signs
//! records goes through the library (`meshbus::contract`), the same path services use.
//!
//! Exit codes: 0 success; 1 a record was refused (verify) or not delivered, or a graceful stop
//! left something unflushed or a partition stalled; 2 usage error; 3 configuration, key, file
//! or broker failure. Long-running commands stop gracefully on SIGTERM and SIGINT within
//! `MESHBUS_SHUTDOWN_TIMEOUT_MS`.

mod bus;
mod demo;
mod dlq;
mod keys;
mod offline;
pub mod sample;
mod signals;

use clap::{Parser, Subcommand};
use meshbus::config::Config;
use meshbus::contract::{keys as keyfiles, Kind, TrustStore};
use meshbus::metrics::http::{self, ReadySlot};
use meshbus::metrics::Metrics;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A record was refused or not delivered.
    Refused = 1,
    /// Bad arguments.
    Usage = 2,
    /// Configuration, key, file or broker failure.
    Failure = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// The CyberMesh bus from the command line: keys, offline signing and verification, producing
/// and consuming verified records, the dead-letter queue, and a whole-mesh demo.
///
/// Broker settings come from the SPEC environment variables (KAFKA_BROKERS, KAFKA_TLS_ENABLED,
/// KAFKA_CA_CERT, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, ...).
/// Exit codes: 0 ok, 1 refused or not delivered, 2 usage, 3 configuration/broker failure.
#[derive(Debug, Parser)]
#[command(name = "meshbus", version, about, long_about)]
pub struct Cli {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464) while the command runs.
    #[arg(long, global = true, env = "MESHBUS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log filter for stderr: a level (error, warn, info, debug, trace) or
    /// `level,target=level,...` (e.g. `warn,meshbus=debug`).
    #[arg(long, global = true, default_value = "warn", env = "MESHBUS_LOG")]
    pub log: String,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MESHBUS_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public key file.
    Keygen(keys::KeygenArgs),
    /// Sign a message (proto3 JSON) offline; writes the record bytes.
    Sign(offline::SignArgs),
    /// Verify a record offline with the contract verifier; prints `ok` or the reason code.
    Verify(offline::VerifyArgs),
    /// Sign and publish messages of one kind to their topic.
    Produce(bus::ProduceArgs),
    /// Consume topics as a verifying group member; print what verifies, dead-letter the rest.
    Consume(bus::ConsumeArgs),
    /// List dead letters with their reasons, or replay them to their original topic.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Run the whole mesh on the configured broker and print a summary.
    Demo(demo::DemoArgs),
    /// Serve an empty metrics registry (to check scraping); stops on SIGTERM or Ctrl-C.
    ServeMetrics,
    /// Print the CyberMesh topics, one per line: each kind's topic from the per-kind table
    /// (with its KAFKA_TOPIC_* override), then the DLQ topic (KAFKA_DLQ_TOPIC). The broker
    /// harness creates these.
    Topics,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields` with the message,
    /// record coordinates `topic`/`partition`/`offset` and `reason` codes where they apply).
    Json,
}

/// Installs the stderr logger. Nothing logged carries a secret: passwords live in `Secret`,
/// which prints `***`, and key material is never a log field.
pub fn init_logging(filter: &str, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // `Targets` takes `level` or `target=level,...` without pulling in a regex engine.
    let filter: tracing_subscriber::filter::Targets = filter.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(false)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Exit {
    if let Err(e) = signals::install() {
        eprintln!("meshbus: {e}");
        return Exit::Failure;
    }
    let metrics = Metrics::new();
    let ready = Arc::new(ReadySlot::default());
    if let Some(addr) = cli.metrics_addr {
        match http::serve(addr, metrics.clone(), ready.clone()).await {
            Ok(bound) => eprintln!("metrics on http://{bound}/metrics"),
            Err(e) => {
                eprintln!("meshbus: cannot serve metrics on {addr}: {e}");
                return Exit::Failure;
            }
        }
    }
    let result = match cli.command {
        Command::Keygen(a) => keys::keygen(a),
        Command::Sign(a) => offline::sign(a),
        Command::Verify(a) => offline::verify(a),
        Command::Produce(a) => bus::produce(a, metrics, ready).await,
        Command::Consume(a) => bus::consume(a, metrics, ready).await,
        Command::Dlq(c) => dlq::run(c, metrics).await,
        Command::Demo(a) => demo::run(a, metrics, cli.metrics_addr).await,
        Command::Topics => {
            // A closed pipe (`meshbus topics | head -1`) ends the listing, not the process.
            let _ = topics().iter().all(|t| emit(t));
            Ok(Exit::Ok)
        }
        Command::ServeMetrics => {
            if cli.metrics_addr.is_none() {
                eprintln!("meshbus: serve-metrics needs --metrics-addr");
                return Exit::Usage;
            }
            signals::stop_requested().await;
            Ok(Exit::Ok)
        }
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("meshbus: {e}");
            Exit::Failure
        }
    }
}

/// The topics of every kind and the DLQ topic, with the environment's overrides (and nothing
/// else of the configuration, so it needs no broker settings).
fn topics() -> Vec<String> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Kind::ALL
        .into_iter()
        .map(|k| get(k.topic_env()).unwrap_or_else(|| k.default_topic().into()))
        .chain([get("KAFKA_DLQ_TOPIC").unwrap_or_else(|| Config::default().dlq_topic)])
        .collect()
}

/// Writes one line to stdout; false once stdout is gone (the reader of a pipe quit). Unlike
/// `println!`, which panics there (and the release build aborts on a panic), the command
/// decides what a lost reader means.
pub fn emit(line: &str) -> bool {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// A failure with a message for the operator (exit 3).
pub type CliResult = Result<Exit, String>;

/// The SPEC 8 configuration from the environment.
pub fn config() -> Result<Config, String> {
    Config::from_env().map_err(|e| e.to_string())
}

/// Reads `path`, or stdin for `-` or none.
pub fn read_input(path: Option<&Path>) -> Result<Vec<u8>, String> {
    match path {
        Some(p) if p != Path::new("-") => {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
    }
}

/// A kind named by `--kind` or by `--topic` (a configured or default topic name).
pub fn kind_of(kind: Option<Kind>, topic: Option<&str>) -> Result<Kind, String> {
    match (kind, topic) {
        (Some(k), _) => Ok(k),
        (None, Some(t)) => Config::from_env()
            .ok()
            .and_then(|c| c.kind_of_topic(t))
            .or_else(|| Kind::from_default_topic(t))
            .ok_or_else(|| format!("topic {t} is not a CyberMesh topic")),
        (None, None) => Err("give --kind or --topic".into()),
    }
}

/// A trust store from PEM files, directories (with an optional validator_registry.json) and
/// 64-hex-character keys.
pub fn trust_store(items: &[String]) -> Result<TrustStore, String> {
    TrustStore::load(items).map_err(|e| e.to_string())
}

/// The signing key at `path`, with the 0600 guard in staging and production.
pub fn signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, String> {
    let env: meshbus::config::Environment = std::env::var("ENVIRONMENT")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or_default();
    keyfiles::load_signing_key(path, env.key_policy()).map_err(|e| e.to_string())
}

/// Shared handle for counting progress on stderr.
pub fn progress(label: &'static str, total: u64) -> Arc<std::sync::atomic::AtomicU64> {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if total >= 1000 {
        let d = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = d.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!("{label}: {n}/{total}");
                if n >= total {
                    break;
                }
            }
        });
    }
    done
}
