//! `meshbus dlq list` and `meshbus dlq replay`: stream the dead-letter topic from the beginning
//! to its current end (no group, nothing committed, one fetch in memory at a time) and show or
//! resend selected records. A null value stays null; a letter whose value was omitted is
//! listed with the original's size and SHA-256 and is not replayed (the original is still at
//! its topic).

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

fn selected(f: &Filter, e: &Entry) -> bool {
    (f.reason.is_empty() || f.reason.contains(&e.letter.reason))
        && f.topic
            .as_ref()
            .is_none_or(|t| *t == e.letter.original_topic)
        && (f.at.is_empty() || f.at.contains(&format!("{}:{}", e.partition, e.offset)))
}

fn print(f: &Filter, e: &Entry) {
    let l = &e.letter;
    let size = l
        .value
        .as_ref()
        .map(|v| v.len() as u64)
        .or(l.omitted.as_ref().map(|o| o.size));
    // `emit`, not `println!`: a closed pipe (`dlq list | head`) must not abort the process.
    let line = if f.json {
        serde_json::json!({
                "dlq_partition": e.partition, "dlq_offset": e.offset,
                "original_topic": l.original_topic, "original_partition": l.original_partition,
                "original_offset": l.original_offset, "reason": l.reason, "error": l.error,
                "node_id": l.node_id, "failed_at_ms": l.failed_at_ms, "value_bytes": size,
                "value_null": l.value.is_none(),
                "value_omitted": l.omitted.is_some(),
                "original_sha256": l.omitted.as_ref().map(|o| o.sha256.clone()),
        })
        .to_string()
    } else {
        format!(
            "{}:{}  {}/{}@{}  {}  node={}  {}{}",
            e.partition,
            e.offset,
            l.original_topic,
            l.original_partition,
            l.original_offset,
            l.reason,
            l.node_id,
            l.error,
            match &l.omitted {
                Some(o) => format!("  [value omitted: {} bytes, sha256 {}]", o.size, o.sha256),
                None => String::new(),
            }
        )
    };
    super::emit(&line);
}

/// What one pass over the DLQ did.
#[derive(Default)]
struct Tally {
    letters: u64,
    selected: u64,
    replayed: u64,
    failed: u64,
}

/// Reads the DLQ topic from the beginning to its current end (one fetch in memory at a time)
/// and calls `each` on every dead letter.
async fn each_letter(
    client: &Client,
    config: &Config,
    mut each: impl AsyncFnMut(Entry),
) -> Result<(), String> {
    let topic = &config.dlq_topic;
    let n = client.partitions(topic).await.map_err(|e| e.to_string())?;
    let reader = client.reader().await.map_err(|e| e.to_string())?;
    for p in 0..n {
        let (start, end) = reader
            .watermarks(topic, p)
            .await
            .map_err(|e| e.to_string())?;
        let mut scan = reader
            .start_scan(topic, p, start, end)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(batch) = reader
            .next_batch(&mut scan)
            .await
            .map_err(|e| e.to_string())?
        {
            for r in batch {
                match DeadLetter::from_record(r.key, r.value.map(Vec::from), &r.headers) {
                    Ok(letter) => {
                        each(Entry {
                            partition: p,
                            offset: r.offset,
                            letter,
                        })
                        .await
                    }
                    Err(e) => eprintln!("{topic}/{p}@{}: skipped: {e}", r.offset),
                }
            }
        }
    }
    reader.close().await;
    Ok(())
}

/// Runs a `dlq` subcommand.
pub(crate) async fn run(cmd: DlqCommand, metrics: Arc<Metrics>) -> CliResult {
    let config = config()?;
    let client = Client::connect(&config).await.map_err(|e| e.to_string())?;
    let mut tally = Tally::default();
    match cmd {
        DlqCommand::List(f) => {
            each_letter(&client, &config, async |e: Entry| {
                tally.letters += 1;
                if selected(&f, &e) {
                    print(&f, &e);
                    tally.selected += 1;
                }
            })
            .await?;
            eprintln!("{} of {} dead letters", tally.selected, tally.letters);
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
            let producer = Producer::new(client.clone(), config.clone(), None, metrics);
            each_letter(&client, &config, async |e: Entry| {
                tally.letters += 1;
                if !selected(&filter, &e) {
                    return;
                }
                tally.selected += 1;
                print(&filter, &e);
                if dry_run {
                    return;
                }
                match e.letter.replay(&producer).await {
                    Ok(d) => {
                        tally.replayed += 1;
                        eprintln!("  replayed to {}/{}@{}", d.topic, d.partition, d.offset);
                    }
                    Err(err) => {
                        tally.failed += 1;
                        eprintln!("  not replayed: {err}");
                    }
                }
            })
            .await?;
            if let Err(err) = producer.close().await {
                eprintln!("closing the producer: {err}");
            }
            eprintln!(
                "replayed {}, failed {}{}",
                tally.replayed,
                tally.failed,
                if dry_run { " (dry run)" } else { "" }
            );
            Ok(if tally.failed == 0 {
                Exit::Ok
            } else {
                Exit::Refused
            })
        }
    }
}
