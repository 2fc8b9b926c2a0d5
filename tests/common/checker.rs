//! The fault checker: after a fault applied while records flowed, it reads the topics back
//! with the independent client (librdkafka) and counts, per run, what the producer sent,
//! what was acknowledged, what failed (by typed error), what the log holds (and how many
//! copies), what was acknowledged but is missing; on the consuming side what each record
//! became (handled once, more than once, by two members at once, dead-lettered by reason,
//! neither), the group's committed offsets against the log end, the longest send and the time
//! the consumer took to handle new records after the fault ended. The tests assert on its
//! reports and print them as table rows (`MESHBUS_CHECKER_TABLE=FILE` also appends them there).
#![allow(dead_code)]

use super::broker::Broker;
use meshbus::producer::SendError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One send as the producer saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The record's value, unique within the run (that is how the log is matched).
    pub value: Vec<u8>,
    /// Where it was acknowledged, or the stable code of the error it failed with.
    pub landed: Result<(i32, i64), String>,
    /// How long the send took.
    pub took: Duration,
}

impl Sent {
    /// The outcome of one send that started at `started`.
    pub fn of(
        value: Vec<u8>,
        started: Instant,
        r: &Result<meshbus::producer::Delivery, SendError>,
    ) -> Sent {
        Sent {
            value,
            landed: match r {
                Ok(d) => Ok((d.partition, d.offset)),
                Err(e) => Err(error_code(e)),
            },
            took: started.elapsed(),
        }
    }
}

/// A stable code for a failed send: the error's variant, and the Kafka error's code under it.
pub fn error_code(e: &SendError) -> String {
    e.code().into_owned()
}

/// What the producer side of a run came to.
#[derive(Debug, Clone, Default)]
pub struct ProduceReport {
    /// Sends made.
    pub sent: usize,
    /// Sends acknowledged.
    pub acked: usize,
    /// Failed sends by error code.
    pub failed: BTreeMap<String, usize>,
    /// Records of the run in the log (values sent by it; copies counted once).
    pub in_log: usize,
    /// Values stored more than once.
    pub duplicates: usize,
    /// Acknowledged records not found at their acknowledged place.
    pub acked_missing: usize,
    /// Failed sends whose record is in the log anyway ("possibly written").
    pub failed_in_log: usize,
    /// Records in the log that the run never sent (beside `expected_extra`).
    pub strangers: usize,
    /// The longest send.
    pub longest_send: Duration,
}

impl ProduceReport {
    /// Failed sends in all.
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }

    /// The produce assertions of an outage shorter than the delivery timeout: no send failed,
    /// nothing acknowledged is missing, nothing is stored twice, nothing unknown is stored.
    pub fn assert_rode_out(&self, fault: &str) {
        assert_eq!(
            self.acked_missing, 0,
            "{fault}: acknowledged records missing: {self:?}"
        );
        assert_eq!(
            self.duplicates, 0,
            "{fault}: records stored twice: {self:?}"
        );
        assert_eq!(self.strangers, 0, "{fault}: records nobody sent: {self:?}");
        assert_eq!(self.failed_total(), 0, "{fault}: sends failed: {self:?}");
        assert_eq!(self.acked, self.sent, "{fault}: {self:?}");
    }
}

/// Reads `topic` back and counts `sent` against it. `expected_extra` records in the log are
/// not the run's (a warm-up record, earlier runs on the topic).
pub fn check_produce(
    b: &Broker,
    topic: &str,
    sent: &[Sent],
    expected_extra: usize,
) -> ProduceReport {
    let log = read_topic(b, topic);
    let mut copies: BTreeMap<&[u8], usize> = BTreeMap::new();
    for r in &log {
        *copies.entry(r.value.as_slice()).or_default() += 1;
    }
    let at: BTreeMap<(i32, i64), &[u8]> = log
        .iter()
        .map(|r| ((r.partition, r.offset), r.value.as_slice()))
        .collect();
    let mut report = ProduceReport {
        sent: sent.len(),
        longest_send: sent.iter().map(|s| s.took).max().unwrap_or_default(),
        ..Default::default()
    };
    let ours: BTreeSet<&[u8]> = sent.iter().map(|s| s.value.as_slice()).collect();
    for s in sent {
        let n = copies.get(s.value.as_slice()).copied().unwrap_or(0);
        if n > 0 {
            report.in_log += 1;
        }
        if n > 1 {
            report.duplicates += 1;
        }
        match &s.landed {
            Ok(place) => {
                report.acked += 1;
                if at.get(place) != Some(&s.value.as_slice()) {
                    report.acked_missing += 1;
                }
            }
            Err(code) => {
                *report.failed.entry(code.clone()).or_default() += 1;
                if n > 0 {
                    report.failed_in_log += 1;
                }
            }
        }
    }
    let strangers = log
        .iter()
        .filter(|r| !ours.contains(r.value.as_slice()))
        .count();
    report.strangers = strangers.saturating_sub(expected_extra);
    report
}

/// One record handling, as a recording handler saw it.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Which member (the test's numbering).
    pub member: usize,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// When the handler began.
    pub began: Instant,
    /// When it returned.
    pub ended: Instant,
}

/// The handlings of a run, shared with the handlers.
pub type Handles = Arc<Mutex<Vec<Handle>>>;

/// Records one handling (call it from the handler as it returns).
pub fn record(handles: &Handles, member: usize, r: &meshbus::consumer::Consumed, began: Instant) {
    handles.lock().unwrap().push(Handle {
        member,
        partition: r.partition,
        offset: r.offset,
        began,
        ended: Instant::now(),
    });
}

/// A handler that records each handling as member `member` and accepts the record.
pub fn recorder(
    handles: &Handles,
    member: usize,
) -> impl Fn(
    meshbus::consumer::Consumed,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = meshbus::consumer::HandlerResult> + Send>,
> + Send
       + Sync
       + 'static {
    let handles = handles.clone();
    move |r| {
        let handles = handles.clone();
        Box::pin(async move {
            record(&handles, member, &r, Instant::now());
            Ok(())
        })
    }
}

/// The places (partition, offset) handled so far.
pub fn places(handles: &Handles) -> BTreeSet<(i32, i64)> {
    handles
        .lock()
        .unwrap()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect()
}

/// What the consuming side of a run came to, for one group.
#[derive(Debug, Clone, Default)]
pub struct ConsumeReport {
    /// Records in the topic's log.
    pub records: usize,
    /// Records handled exactly once.
    pub handled_once: usize,
    /// Records handled more than once.
    pub handled_more: usize,
    /// Records handled by two members with overlapping handlings.
    pub handled_at_once: usize,
    /// Dead letters of the topic by reason.
    pub dead_lettered: BTreeMap<String, usize>,
    /// Records neither handled nor dead-lettered.
    pub neither: usize,
    /// Partitions whose committed offset is not the log end: (partition, committed, end).
    pub lagging: Vec<(i32, Option<i64>, i64)>,
    /// From the fault's end until every record sent after it was handled (None: not all were,
    /// or the run measured no recovery).
    pub recovery: Option<Duration>,
    /// Whether the run measured the recovery (it named records sent after the fault).
    pub recovery_measured: bool,
}

impl ConsumeReport {
    /// Dead letters with reason `replayed`.
    pub fn replayed(&self) -> usize {
        self.dead_lettered.get("replayed").copied().unwrap_or(0)
    }

    /// The consume assertions: every record handled exactly once (no dead letter: every record
    /// of the run is genuine), none by two members at once, commits at the log end, and none
    /// called a replay.
    pub fn assert_exactly_once(&self, fault: &str) {
        assert_eq!(
            self.replayed(),
            0,
            "{fault}: redeliveries called replays: {self:?}"
        );
        assert!(
            self.dead_lettered.is_empty(),
            "{fault}: genuine records dead-lettered: {self:?}"
        );
        assert_eq!(
            self.handled_more, 0,
            "{fault}: records handled twice: {self:?}"
        );
        assert_eq!(
            self.handled_at_once, 0,
            "{fault}: records handled by two members at once: {self:?}"
        );
        assert_eq!(
            self.neither, 0,
            "{fault}: records neither handled nor dead-lettered: {self:?}"
        );
        assert_eq!(self.handled_once, self.records, "{fault}: {self:?}");
        assert!(
            self.lagging.is_empty(),
            "{fault}: commits short of the log end: {self:?}"
        );
    }

    /// The recovery target: every record sent after the fault's end handled within `limit` of
    /// it (the session timeout + 10 s).
    pub fn assert_recovered_within(&self, limit: Duration, fault: &str) {
        match self.recovery {
            Some(r) => assert!(
                r <= limit,
                "{fault}: new records handled {r:?} after the fault ended (limit {limit:?})"
            ),
            None => panic!("{fault}: records sent after the fault were never handled"),
        }
    }
}

/// Reads `topic` and `dlq_topic` back and counts the handlings of `group` against them.
/// `after` are the places of records sent once the fault ended at `fault_end`.
pub fn check_consume(
    b: &Broker,
    topic: &str,
    dlq_topic: &str,
    group: &str,
    handles: &[Handle],
    after: Option<(Instant, &BTreeSet<(i32, i64)>)>,
) -> ConsumeReport {
    let log = read_topic(b, topic);
    let mut by_place: BTreeMap<(i32, i64), Vec<&Handle>> = BTreeMap::new();
    for h in handles {
        by_place.entry((h.partition, h.offset)).or_default().push(h);
    }
    let mut dead: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut report = ConsumeReport {
        records: log.len(),
        ..Default::default()
    };
    for d in read_topic(b, dlq_topic) {
        let header = |name: &str| {
            d.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        if header("original_topic").as_deref() != Some(topic) {
            continue;
        }
        let reason = header("reason").unwrap_or_default();
        *report.dead_lettered.entry(reason.clone()).or_default() += 1;
        let place = (
            header("original_partition")
                .and_then(|p| p.parse().ok())
                .unwrap_or(-1),
            header("original_offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1),
        );
        dead.insert(place, reason);
    }
    for r in &log {
        let place = (r.partition, r.offset);
        match by_place.get(&place).map(Vec::as_slice) {
            None | Some([]) => {
                if !dead.contains_key(&place) {
                    report.neither += 1;
                }
            }
            Some([_]) => report.handled_once += 1,
            Some(hs) => {
                report.handled_more += 1;
                let overlap = hs.iter().enumerate().any(|(i, a)| {
                    hs[i + 1..]
                        .iter()
                        .any(|b| a.member != b.member && a.began < b.ended && b.began < a.ended)
                });
                if overlap {
                    report.handled_at_once += 1;
                }
            }
        }
    }
    let committed = b.committed(group);
    for ((t, p), end) in b.end_offsets(&[topic]) {
        let c = committed.get(&(t.clone(), p)).copied();
        if end > 0 && c != Some(end) {
            report.lagging.push((p, c, end));
        }
    }
    if let Some((fault_end, after)) = after {
        report.recovery_measured = true;
        let firsts: Option<Vec<Instant>> = after
            .iter()
            .map(|place| {
                by_place
                    .get(place)
                    .and_then(|hs| hs.iter().map(|h| h.began).min())
            })
            .collect();
        report.recovery = firsts.map(|f| {
            f.into_iter()
                .max()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(fault_end))
        });
    }
    report
}

/// Handlings per `step` from `origin` (negative steps before it), for a failure's diagnosis:
/// `[-2]=..., [0]=..., [1]=...`.
pub fn timeline(handles: &[Handle], origin: Instant, step: Duration) -> String {
    let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
    for h in handles {
        let i = if h.began >= origin {
            (h.began - origin).as_secs_f64() / step.as_secs_f64()
        } else {
            -((origin - h.began).as_secs_f64() / step.as_secs_f64()) - 1.0
        };
        *buckets.entry(i.floor() as i64).or_default() += 1;
    }
    buckets
        .iter()
        .map(|(i, n)| format!("[{i}]={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One table row for a fault: the produce and the consume figures.
pub fn row(fault: &str, p: Option<&ProduceReport>, c: Option<&ConsumeReport>) -> String {
    let produce = p.map_or("-".to_string(), |p| {
        format!(
            "sent {}, acked {}, failed {} {:?}, in log {}, duplicates {}, acked missing {}, failed but in log {}, longest send {:.1?}",
            p.sent,
            p.acked,
            p.failed_total(),
            p.failed,
            p.in_log,
            p.duplicates,
            p.acked_missing,
            p.failed_in_log,
            p.longest_send
        )
    });
    let consume = c.map_or("-".to_string(), |c| {
        format!(
            "records {}, handled once {}, more than once {}, at once {}, dead-lettered {:?}, neither {}, partitions behind {}, recovery {}",
            c.records,
            c.handled_once,
            c.handled_more,
            c.handled_at_once,
            c.dead_lettered,
            c.neither,
            c.lagging.len(),
            match (c.recovery, c.recovery_measured) {
                (Some(r), _) => format!("{r:.1?}"),
                (None, true) => "never".to_string(),
                (None, false) => "-".to_string(),
            }
        )
    });
    let line = format!("| {fault} | {produce} | {consume} |");
    eprintln!("CHECKER {line}");
    if let Ok(path) = std::env::var("MESHBUS_CHECKER_TABLE") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    line
}

/// A record read back.
pub struct LogRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: BTreeMap<String, Vec<u8>>,
}

/// Every record of `topic`, read with librdkafka from the beginning.
pub fn read_topic(b: &Broker, topic: &str) -> Vec<LogRecord> {
    let total: i64 = b.end_offsets(&[topic]).values().sum();
    if total == 0 {
        return Vec::new();
    }
    b.py_read(topic, total as usize)
        .into_iter()
        .map(|r| LogRecord {
            partition: r["partition"].as_i64().unwrap() as i32,
            offset: r["offset"].as_i64().unwrap(),
            value: r["value"]
                .as_str()
                .map(|v| hex::decode(v).unwrap())
                .unwrap_or_default(),
            headers: r["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                hex::decode(v.as_str().unwrap_or("")).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}
