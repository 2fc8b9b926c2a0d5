//! `meshbus dlq list` and `meshbus dlq replay`: read the dead-letter topic from the beginning to
//! its current end (no group, nothing committed) and show or resend selected records.

use super::{config, CliResult, Exit};
use meshbus::config::Config;
use meshbus::dlq::DeadLetter;
use meshbus::kafka::Client;
use meshbus::metrics::Metrics;
use meshbus::producer::Producer;

use std::sync::Arc;

/// `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters: where each came from and why.
    List(Filter),
    /// Send selected dead letters' original records back to their original topics.
    Replay {
        /// Which records.
        #[command(flatten)]
        filter: Filter,
        /// Replay every record the filter selects (without a filter: the whole DLQ).
        #[arg(long)]
        all: bool,
        /// Show what would be replayed, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Selection of dead letters.
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// Only this reason code (repeatable).
    #[arg(long)]
    pub reason: Vec<String>,
    /// Only this original topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only these DLQ positions, as PARTITION:OFFSET (repeatable).
    #[arg(long = "at")]
    pub at: Vec<String>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// One dead letter and where it sits in the DLQ topic.
struct Entry {
    partition: i32,
    offset: i64,
    letter: DeadLetter,
}

async fn read_all(client: &Client, config: &Config) -> Result<Vec<Entry>, String> {
    let topic = &config.dlq_topic;
    let n = client.partitions(topic).await.map_err(|e| e.to_string())?;
    let reader = client.reader().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for p in 0..n {
        let (start, end) = reader
            .watermarks(topic, p)
            .await
            .map_err(|e| e.to_string())?;
        reader
            .scan(topic, p, start, end, |r| {
                match DeadLetter::from_record(r.key, r.value.unwrap_or_default(), &r.headers) {
                    Ok(letter) => out.push(Entry {
                        partition: p,
                        offset: r.offset,
                        letter,
                    }),
                    Err(e) => eprintln!("{topic}/{p}@{}: skipped: {e}", r.offset),
                }
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    reader.close().await;
    Ok(out)
}

fn selected(f: &Filter, e: &Entry) -> bool {
    (f.reason.is_empty() || f.reason.contains(&e.letter.reason))
        && f.topic
            .as_ref()
            .is_none_or(|t| *t == e.letter.original_topic)
        && (f.at.is_empty() || f.at.contains(&format!("{}:{}", e.partition, e.offset)))
}

fn print(f: &Filter, e: &Entry) {
    let l = &e.letter;
    if f.json {
        println!(
            "{}",
            serde_json::json!({
                "dlq_partition": e.partition, "dlq_offset": e.offset,
                "original_topic": l.original_topic, "original_partition": l.original_partition,
                "original_offset": l.original_offset, "reason": l.reason, "error": l.error,
                "node_id": l.node_id, "failed_at_ms": l.failed_at_ms, "value_bytes": l.value.len(),
            })
        );
    } else {
        println!(
            "{}:{}  {}/{}@{}  {}  node={}  {}",
            e.partition,
            e.offset,
            l.original_topic,
            l.original_partition,
            l.original_offset,
            l.reason,
            l.node_id,
            l.error
        );
    }
}

/// Runs a `dlq` subcommand.
pub async fn run(cmd: DlqCommand, metrics: Arc<Metrics>) -> CliResult {
    let config = config()?;
    let client = Client::connect(&config).await.map_err(|e| e.to_string())?;
    let entries = read_all(&client, &config).await?;
    match cmd {
        DlqCommand::List(f) => {
            let mut shown = 0;
            for e in entries.iter().filter(|e| selected(&f, e)) {
                print(&f, e);
                shown += 1;
            }
            eprintln!("{shown} of {} dead letters", entries.len());
            Ok(Exit::Ok)
        }
        DlqCommand::Replay {
            filter,
            all,
            dry_run,
        } => {
            let narrowed =
                !filter.reason.is_empty() || filter.topic.is_some() || !filter.at.is_empty();
            if !all && !narrowed {
                eprintln!("meshbus: choose records with --at/--reason/--topic, or pass --all");
                return Ok(Exit::Usage);
            }
            let producer = Producer::new(client, config, None, metrics);
            let (mut sent, mut failed) = (0, 0);
            for e in entries.iter().filter(|e| selected(&filter, e)) {
                print(&filter, e);
                if dry_run {
                    continue;
                }
                match e.letter.replay(&producer).await {
                    Ok(d) => {
                        sent += 1;
                        eprintln!("  replayed to {}/{}@{}", d.topic, d.partition, d.offset);
                    }
                    Err(err) => {
                        failed += 1;
                        eprintln!("  not replayed: {err}");
                    }
                }
            }
            if let Err(err) = producer.close().await {
                eprintln!("closing the producer: {err}");
            }
            eprintln!(
                "replayed {sent}, failed {failed}{}",
                if dry_run { " (dry run)" } else { "" }
            );
            Ok(if failed == 0 { Exit::Ok } else { Exit::Refused })
        }
    }
}
