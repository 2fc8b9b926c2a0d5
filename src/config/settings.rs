//! The knobs of the producer (SPEC 5), the consumer and its group (SPEC 6), and verification
//! (SPEC 3-4), with their defaults.

use std::time::Duration;

/// Record compression (`KAFKA_PRODUCER_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// snappy (default).
    #[default]
    Snappy,
    /// lz4 (pure Rust).
    Lz4,
    /// zstd (encoding needs the `c-codecs` feature; decoding is always there).
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            o => Err(format!(
                "must be none, gzip, snappy, lz4 or zstd, not `{o}`"
            )),
        }
    }
}

/// Producer knobs of SPEC 5.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProducerSettings {
    /// `KAFKA_PRODUCER_IDEMPOTENT` (default true).
    pub idempotent: bool,
    /// `KAFKA_PRODUCER_COMPRESSION` (default snappy).
    pub compression: Compression,
    /// `KAFKA_RETRY_BACKOFF_MS` (default 1000): first retry delay.
    pub retry_backoff: Duration,
    /// Longest retry delay (60 s).
    pub retry_backoff_max: Duration,
    /// `KAFKA_MAX_RETRIES` (default 5): retries of a send that failed with an error the
    /// client could not retry itself (not a [`Self::delivery_timeout`] that ran out).
    pub max_retries: usize,
    /// `KAFKA_DELIVERY_TIMEOUT_MS` (default 120,000; at least linger + request timeout): how
    /// long the client itself retries a send, keeping its idempotent producer id, epoch and
    /// sequence, before the send fails (saying whether it may have been written). An outage
    /// shorter than this fails no send and doubles no record.
    pub delivery_timeout: Duration,
    /// `KAFKA_BREAKER_FAILURES` (default 5): consecutive sends failed for good that open the
    /// breaker.
    pub breaker_failures: u32,
    /// `KAFKA_BREAKER_OPEN_MS` (default 30,000): how long the breaker stays open before
    /// half-opening.
    pub breaker_open_for: Duration,
    /// `KAFKA_BREAKER_SUCCESSES` (default 2): half-open successes that close it.
    pub breaker_successes: u32,
    /// `KAFKA_PRODUCER_MAX_RECORDS_PER_SEC` (unset: no limit): sends wait, never drop, above it.
    pub max_records_per_sec: Option<u32>,
    /// `KAFKA_PRODUCER_MAX_BYTES_PER_SEC` (unset: no limit): value bytes per second, waiting.
    pub max_bytes_per_sec: Option<u32>,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            idempotent: true,
            compression: Compression::Snappy,
            retry_backoff: Duration::from_millis(1000),
            retry_backoff_max: Duration::from_secs(60),
            max_retries: 5,
            delivery_timeout: Duration::from_secs(120),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            breaker_successes: 2,
            max_records_per_sec: None,
            max_bytes_per_sec: None,
        }
    }
}

/// Which consumer group protocol members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol (JoinGroup/SyncGroup/Heartbeat, client-side assignors): the
    /// default, since Sarama and older brokers speak only this one.
    #[default]
    Classic,
    /// KIP-848 (ConsumerGroupHeartbeat, server-side assignment, incremental: a member joining
    /// or leaving does not stop the others' partitions); Apache Kafka 4.0 and later.
    Consumer,
}

/// Partition assignors offered to the group (classic protocol), preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Contiguous ranges per topic (Java's and librdkafka's default).
    Range,
    /// Partitions dealt in turn.
    RoundRobin,
    /// Incremental cooperative rebalancing (KIP-429): a rebalance moves only the partitions
    /// that change owner, and members keep consuming the rest. Every member of the group must
    /// offer it (Sarama 1.61+, the Java client, librdkafka: `cooperative-sticky`); a group
    /// moves to it from an eager assignor by a rolling restart that offers both.
    CooperativeSticky,
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest record kept (the default: a security consumer should not skip history).
    Earliest,
    /// Only records produced after joining.
    Latest,
}

/// Everything about how a consumer behaves, but its group id (which the role gives: see
/// [`Config::validator_group`](super::Config::validator_group)): the SPEC 6 knobs from the
/// environment and the group, fetch and commit settings, each default written here once.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerSettings {
    /// `KAFKA_CONSUMER_RETRY_MAX` (default 5).
    pub retry_max: usize,
    /// `KAFKA_GROUP_INSTANCE_ID` (unset: dynamic membership): static membership (KIP-345), so a
    /// member restarted within the session timeout gets its partitions back without a
    /// rebalance of the others. Unique per member of a group.
    pub group_instance_id: Option<String>,
    /// `KAFKA_GROUP_PROTOCOL` (`classic`, the default, or `consumer` for KIP-848).
    pub group_protocol: GroupProtocol,
    /// First handler retry delay (100 ms), doubling.
    pub retry_backoff: Duration,
    /// Longest handler retry delay (5 s).
    pub retry_backoff_max: Duration,
    /// The replay guard's read-back of newly assigned `ai.*` partitions (SPEC 3e).
    pub warmup: WarmupSettings,
    /// Assignors offered, preferred first (classic protocol; default range, then round-robin).
    pub assignors: Vec<Assignor>,
    /// A member silent for this long is removed from the group (30 s).
    pub session_timeout: Duration,
    /// How long a member may take to give partitions up in a rebalance (60 s).
    pub rebalance_timeout: Duration,
    /// How often a member tells the coordinator it is alive (3 s).
    pub heartbeat_interval: Duration,
    /// Start for partitions without a committed offset (the earliest record).
    pub start_from: StartFrom,
    /// Largest fetch response (4 MiB).
    pub fetch_max_bytes: i32,
    /// Longest a fetch waits for new records (500 ms).
    pub fetch_max_wait: Duration,
    /// How often handled offsets are committed while running (500 ms).
    pub commit_interval: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            retry_max: 5,
            group_instance_id: None,
            group_protocol: GroupProtocol::Classic,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            warmup: WarmupSettings::default(),
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
            session_timeout: Duration::from_secs(30),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            start_from: StartFrom::Earliest,
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
            commit_interval: Duration::from_millis(500),
        }
    }
}

/// Bounds of the read-back (SPEC 3e): before records of a newly assigned `ai.*` partition
/// reach handlers, the consumer reads it from the offset of `now - 2 x skew` up to where it
/// starts consuming, verifies those records and lets the replay guard remember the accepted
/// ones. A read-back cut short by a bound is reported (log, `meshbus_replay_warmup_cut_total`):
/// replays of the records it did not read are not refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WarmupSettings {
    /// `KAFKA_REPLAY_WARMUP_MAX_RECORDS` (default 1,000,000): most records read back per
    /// partition (the newest ones, when there are more in the window; 0 turns the read-back
    /// off, which the log reports at every assignment).
    pub max_records: u64,
    /// `KAFKA_REPLAY_WARMUP_MAX_MS` (default 120,000): longest read-back of one partition.
    pub max_time: Duration,
    /// `KAFKA_REPLAY_WARMUP_THREADS` (default 0: every core the process may use): threads
    /// verifying read-back records in parallel.
    pub threads: usize,
}

impl Default for WarmupSettings {
    /// A million records per partition and two minutes: at the read-back rate measured on a
    /// 2-core machine (README, "Replay protection across restarts") a full window of a million
    /// records takes well under the time bound, and a partition busier than that over ten
    /// minutes is reported rather than held back for long.
    fn default() -> Self {
        WarmupSettings {
            max_records: 1_000_000,
            max_time: Duration::from_secs(120),
            threads: 0,
        }
    }
}

impl WarmupSettings {
    /// Verifying threads to use: `threads`, or every core the process may use.
    pub(crate) fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// How records are verified, from the environment (SPEC 3d, 4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerificationSettings {
    /// `KAFKA_MAX_TIMESTAMP_SKEW` (seconds, default 300): allowed |ts - now| for `ai.*`.
    pub ai_skew_secs: i64,
    /// `CONTROL_TIMESTAMP_SKEW` (seconds, default 60): allowed |timestamp - now| for `control.*`.
    pub control_skew_secs: i64,
    /// `AI_POLICY_ALLOWED_PUBKEYS` (comma-separated hex): when set, `ai.policy.v1` signers
    /// must be listed. Weak (small-order) keys are refused at start-up.
    pub policy_allowlist: Option<Vec<[u8; 32]>>,
    /// `AI_POLICY_ALLOWED_PUBKEYS_FILE`: the allowlist read from this file instead (the same
    /// format, also one key per line, `#` comments), reloaded while running when it changes
    /// and on SIGHUP ([`crate::mesh::Mesh::watch_policy_allowlist`]).
    pub policy_allowlist_file: Option<std::path::PathBuf>,
}

impl Default for VerificationSettings {
    /// The verifier's own defaults ([`VerifierConfig`](crate::contract::VerifierConfig)), so
    /// each is written once.
    fn default() -> Self {
        let verifier = crate::contract::VerifierConfig::default();
        VerificationSettings {
            ai_skew_secs: verifier.ai_skew_secs,
            control_skew_secs: verifier.control_skew_secs,
            policy_allowlist: None,
            policy_allowlist_file: None,
        }
    }
}
