//! The **warm-up** stage (SPEC 3e): before records of a newly assigned `ai.*` partition reach
//! handlers, its worker reads the partition back from the offset of `now - window` (ListOffsets
//! by time; the window is twice the skew) up to the group's committed offset, verifies those
//! records on every core it is given, and lets the replay guard remember the accepted ones in
//! log order, each at its place. So a replay is refused after a restart or a partition move as
//! it was before, and a forged record in the window reserves nothing (it fails verification).
//!
//! A partition the group never committed needs no read-back: the group handled nothing there.
//! The read-back is bounded in records (the newest are read) and in time; a bound that cuts it
//! short is logged and counted (`meshbus_replay_warmup_cut_total`), never silent.

use super::backoff::Backoff;
use super::offsets::TopicPartition;
use super::Shared;
use crate::contract::{Kind, Message, Place, Verifier};
use crate::kafka::{GroupConsumer, InRecord, KafkaError, Reader};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which bound cut a read-back short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// `KAFKA_REPLAY_WARMUP_MAX_RECORDS`: the window held more records; the oldest were not read.
    Records,
    /// `KAFKA_REPLAY_WARMUP_MAX_MS`: time ran out (a slow or unreachable broker).
    Time,
}

impl Bound {
    fn label(self) -> &'static str {
        match self {
            Bound::Records => "records",
            Bound::Time => "time",
        }
    }
}

/// What one partition's read-back did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReadBack {
    /// First offset read.
    pub(crate) from: i64,
    /// The committed offset, where handling starts (not read).
    pub(crate) to: i64,
    /// The next offset to read (a retry goes on from here).
    pub(crate) next: i64,
    /// Records read.
    pub(crate) read: u64,
    /// Accepted records the guard did not know yet.
    pub(crate) learned: u64,
    /// Records refused by verification (forged, stale, malformed): not remembered.
    pub(crate) refused: u64,
    /// The bounds that cut it short.
    pub(crate) cut: Vec<Bound>,
}

/// Marks a partition as warming from its assignment until its read-back ends, however it
/// ends: `/readyz` is false while any partition is warming.
pub(crate) struct Warming(Arc<Shared>);

impl Warming {
    pub(crate) fn start(shared: &Arc<Shared>) -> Warming {
        shared.health.warming.fetch_add(1, Ordering::Relaxed);
        shared.metrics.warmup_partitions.inc();
        Warming(shared.clone())
    }
}

impl Drop for Warming {
    fn drop(&mut self) {
        self.0.health.warming.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.warmup_partitions.dec();
    }
}

/// Reads `tp` back into the replay guard; `None` when `stop` was raised first. `finished` is
/// the offset after the last record this process finished on `tp` (0: none): when the group's
/// committed offset is not past it, every record below the committed offset already went
/// through this process's guard (read back at an earlier assignment, or verified and handled
/// since), so nothing is read again: a partition that comes back to its member after a
/// rejoin is at work at once.
pub(crate) async fn read_back(
    shared: &Shared,
    consumer: &GroupConsumer,
    tp: &TopicPartition,
    kind: Kind,
    finished: i64,
    stop: &mut watch::Receiver<bool>,
) -> Option<ReadBack> {
    if finished > 0 {
        let committed = tokio::select! {
            c = consumer.committed(&tp.0, tp.1) => c,
            _ = stop.changed() => return None,
        };
        if let Ok(Some(committed)) = committed {
            if committed <= finished {
                tracing::info!(topic = %tp.0, partition = tp.1, committed, finished, "replay guard warm: this process already saw every record below the committed offset; nothing read back");
                return Some(ReadBack {
                    from: committed,
                    to: committed,
                    next: committed,
                    ..ReadBack::default()
                });
            }
        }
    }
    let settings = &shared.config.consumer.warmup;
    // A few partitions read back at a time, so memory holds a few fetches, not one per
    // partition; the others wait their turn (still warming, so not ready).
    let _slot = tokio::select! {
        slot = shared.warmup_slots.acquire() => slot.ok(),
        _ = stop.changed() => return None,
    };
    let started = Instant::now();
    let deadline = started + settings.max_time;
    let mut done = ReadBack::default();
    let mut planned = false;
    let mut errors = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = attempt(
            shared,
            consumer,
            tp,
            kind,
            &mut done,
            &mut planned,
            deadline,
        );
        let outcome = tokio::select! {
            o = attempt => o,
            _ = stop.changed() => return None,
        };
        match outcome {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "replay read-back failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(errors.next_delay()) => {}
                    _ = stop.changed() => return None,
                }
            }
            Err(e) => {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "replay read-back failed until its time bound");
                done.cut.push(Bound::Time);
                break;
            }
        }
    }
    if *stop.borrow() {
        return None;
    }
    report(shared, tp, &done, started.elapsed());
    Some(done)
}

/// One try: plan the range (once), then read on from where the last try stopped.
async fn attempt(
    shared: &Shared,
    consumer: &GroupConsumer,
    tp: &TopicPartition,
    kind: Kind,
    done: &mut ReadBack,
    planned: &mut bool,
    deadline: Instant,
) -> Result<(), KafkaError> {
    let reader = shared.client.reader().await?;
    let result = async {
        if !*planned {
            plan(shared, consumer, &reader, tp, done).await?;
            *planned = true;
        }
        read(shared, &reader, tp, kind, done, deadline).await
    }
    .await;
    reader.close().await;
    result
}

/// Fixes `from` and `to`: the offset of `now - window`, no more than the record bound before
/// the committed offset.
async fn plan(
    shared: &Shared,
    consumer: &GroupConsumer,
    reader: &Reader,
    tp: &TopicPartition,
    done: &mut ReadBack,
) -> Result<(), KafkaError> {
    let Some(committed) = consumer.committed(&tp.0, tp.1).await? else {
        return Ok(()); // never committed: nothing was handled here
    };
    let (_, end) = reader.watermarks(&tp.0, tp.1).await?;
    if committed > end {
        // The log was truncated or recreated under the group: consumption restarts from a
        // reset, and records read back here would then come again at the same places and be
        // taken for redeliveries. Nothing is read back.
        tracing::warn!(topic = %tp.0, partition = tp.1, committed, end, "committed offset beyond the log end (truncated or recreated topic): nothing read back");
        return Ok(());
    }
    let to = committed;
    let verifier = &shared.verifier;
    let since_ms = verifier
        .now_secs()
        .saturating_sub(verifier.replay_window_secs())
        .saturating_mul(1000);
    let start = reader
        .offset_for_time(&tp.0, tp.1, since_ms)
        .await?
        .unwrap_or(to)
        .min(to);
    let max = i64::try_from(shared.config.consumer.warmup.max_records).unwrap_or(i64::MAX);
    let floor = to.saturating_sub(max);
    if start < floor {
        done.cut.push(Bound::Records);
    }
    done.from = start.max(floor);
    done.next = done.from;
    done.to = to;
    Ok(())
}

/// Reads `[from + read, to)`, verifying one fetch on the blocking pool while the next arrives.
async fn read(
    shared: &Shared,
    reader: &Reader,
    tp: &TopicPartition,
    kind: Kind,
    done: &mut ReadBack,
    deadline: Instant,
) -> Result<(), KafkaError> {
    let mut scan = reader.start_scan(&tp.0, tp.1, done.next, done.to).await?;
    let threads = shared.config.consumer.warmup.thread_count();
    let mut pending: Option<JoinHandle<Learnt>> = None;
    loop {
        let batch =
            match tokio::time::timeout_at(deadline.into(), reader.next_batch(&mut scan)).await {
                Ok(batch) => batch,
                Err(_) => {
                    done.cut.push(Bound::Time);
                    Ok(None)
                }
            };
        if let Some(p) = pending.take() {
            add(done, p.await.unwrap_or_default());
        }
        match batch? {
            Some(records) => {
                done.next = records.last().map_or(done.next, |r| r.offset + 1);
                let (v, topic) = (shared.verifier.clone(), tp.0.clone());
                pending = Some(tokio::task::spawn_blocking(move || {
                    learn(&v, kind, &topic, &records, threads)
                }));
            }
            None => return Ok(()),
        }
    }
}

/// What one fetch taught the guard.
#[derive(Debug, Default, Clone, Copy)]
struct Learnt {
    read: u64,
    learned: u64,
    refused: u64,
}

fn add(done: &mut ReadBack, l: Learnt) {
    done.read += l.read;
    done.learned += l.learned;
    done.refused += l.refused;
}

/// Verifies `records` on `threads` threads, then remembers the accepted ones in offset order
/// (the first sighting of a message keeps its place).
fn learn(
    verifier: &Verifier,
    kind: Kind,
    topic: &str,
    records: &[InRecord],
    threads: usize,
) -> Learnt {
    let verdicts = verify_parallel(verifier, kind, records, threads);
    let mut l = Learnt {
        read: records.len() as u64,
        ..Learnt::default()
    };
    for (r, verdict) in records.iter().zip(verdicts) {
        match verdict {
            Some(m) => {
                if verifier.learn(&m, Place::new(topic, r.partition, r.offset)) {
                    l.learned += 1;
                }
            }
            None => l.refused += 1,
        }
    }
    l
}

/// SPEC 4 steps 1-8 of each record, in order, split over `threads` scoped threads.
pub(crate) fn verify_parallel(
    verifier: &Verifier,
    kind: Kind,
    records: &[InRecord],
    threads: usize,
) -> Vec<Option<Message>> {
    let verify = |r: &InRecord| -> Option<Message> {
        if r.undecodable.is_some() {
            return None;
        }
        let value = r.value.clone().unwrap_or_default();
        verifier.verify_unguarded(kind, value, &r.headers).ok()
    };
    let threads = threads.clamp(1, records.len().max(1));
    if threads == 1 {
        return records.iter().map(verify).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = records.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|c| {
                (
                    c.len(),
                    s.spawn(move || c.iter().map(verify).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mut out: Vec<Option<Message>> = first.iter().map(verify).collect();
        for (len, h) in others {
            // A panicking check (a bug) remembers nothing of its chunk.
            out.extend(h.join().unwrap_or_else(|_| vec![None; len]));
        }
        out
    })
}

/// The log line and metrics of a finished read-back.
fn report(shared: &Shared, tp: &TopicPartition, done: &ReadBack, took: Duration) {
    let label = crate::metrics::Metrics::topic(&tp.0);
    let m = &shared.metrics;
    m.warmup_records.get_or_create(&label).inc_by(done.read);
    m.warmup_seconds
        .get_or_create(&label)
        .observe(took.as_secs_f64());
    shared
        .stats
        .read_back
        .fetch_add(done.read, Ordering::Relaxed);
    let (topic, partition) = (tp.0.as_str(), tp.1);
    if done.cut.is_empty() {
        tracing::info!(
            topic,
            partition,
            from = done.from,
            to = done.to,
            read = done.read,
            learned = done.learned,
            refused = done.refused,
            ms = took.as_millis() as u64,
            "replay guard warm: partition read back"
        );
        return;
    }
    for bound in &done.cut {
        let labels = crate::metrics::TopicBound {
            topic: topic.to_string(),
            bound: bound.label().to_string(),
        };
        m.warmup_cut.get_or_create(&labels).inc();
    }
    shared.stats.read_back_cut.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        topic,
        partition,
        from = done.from,
        to = done.to,
        read = done.read,
        learned = done.learned,
        refused = done.refused,
        ms = took.as_millis() as u64,
        cut_by = ?done.cut.iter().map(|b| b.label()).collect::<Vec<_>>(),
        "replay read-back cut short: replays of the records it did not read are NOT refused on this partition"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Admitted, FixedClock, Signer, TrustStore, VerifierConfig};
    use prost::Message as _;
    use std::collections::BTreeMap;

    const TOPIC: &str = "ai.anomalies.v1";

    fn record(offset: i64, value: Vec<u8>) -> InRecord {
        InRecord {
            topic: TOPIC.into(),
            partition: 0,
            offset,
            key: None,
            value: Some(value.into()),
            headers: BTreeMap::new(),
            undecodable: None,
        }
    }

    fn setup() -> (Verifier, Signer) {
        let clock = Arc::new(FixedClock::at_secs(1_790_000_000));
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        (
            Verifier::with_clock(
                VerifierConfig::default(),
                TrustStore::default(),
                clock.clone(),
            ),
            Signer::with_clock(key, 1, Default::default(), clock),
        )
    }

    #[test]
    fn a_forged_copy_before_the_honest_record_reserves_nothing_and_the_first_sighting_keeps_its_place(
    ) {
        let (verifier, signer) = setup();
        let honest = signer.sign_ai(crate::cli::sample::anomaly(1, 64));
        let mut forged = honest.clone();
        let mut signature = forged.signature.to_vec();
        signature[0] ^= 1; // same (producer_id, nonce), bad signature
        forged.signature = signature.into();
        let other = signer.sign_ai(crate::cli::sample::anomaly(2, 64));
        let records = vec![
            record(10, forged.encode_to_vec()),
            record(11, honest.encode_to_vec()),
            record(12, honest.encode_to_vec()), // a replay already in the window
            record(13, other.encode_to_vec()),
        ];
        for threads in [1, 2, 3] {
            let (verifier, _) = setup();
            let l = learn(&verifier, Kind::Anomaly, TOPIC, &records, threads);
            assert_eq!(
                (l.read, l.learned, l.refused),
                (4, 2, 1),
                "{threads} threads"
            );
        }
        let l = learn(&verifier, Kind::Anomaly, TOPIC, &records, 2);
        assert_eq!(l.learned, 2);
        let value = honest.encode_to_vec();
        let at = |offset| {
            verifier.verify_reserving(
                Kind::Anomaly,
                &value,
                &BTreeMap::new(),
                Some(Place::new(TOPIC, 0, offset)),
            )
        };
        // Handed out again where it was first seen: a redelivery; anywhere else: a replay.
        assert!(matches!(at(11), Ok(Admitted::Redelivered(_))));
        let e = at(12).unwrap_err();
        assert_eq!(e.reason, crate::contract::Reason::Replayed);
        assert_eq!(
            at(20).unwrap_err().reason,
            crate::contract::Reason::Replayed
        );
    }

    #[test]
    fn parallel_verification_keeps_record_order() {
        let (verifier, signer) = setup();
        let mut records = Vec::new();
        for i in 0..37u64 {
            let mut v = signer
                .sign_ai(crate::cli::sample::anomaly(i, 32))
                .encode_to_vec();
            if i % 5 == 0 {
                v.truncate(3); // malformed
            }
            records.push(record(i as i64, v));
        }
        let serial = verify_parallel(&verifier, Kind::Anomaly, &records, 1);
        for threads in [2, 4, 64] {
            assert_eq!(
                verify_parallel(&verifier, Kind::Anomaly, &records, threads),
                serial
            );
        }
        assert_eq!(serial.iter().filter(|m| m.is_none()).count(), 8);
    }
}
