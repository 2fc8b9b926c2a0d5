//! Prometheus metrics of SPEC.md section 9, in a registry the host process can serve
//! ([`Metrics::encode`] gives the text exposition format).

pub mod http;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// `{topic, type}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicType {
    /// Topic.
    pub(crate) topic: String,
    /// Message kind name.
    pub r#type: String,
}

/// `{topic}` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabel {
    /// Topic.
    pub(crate) topic: String,
}

/// `{topic, reason}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicReason {
    /// Topic.
    pub(crate) topic: String,
    /// SPEC reason code.
    pub(crate) reason: String,
}

/// `{topic, partition}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicPartition {
    /// Topic.
    pub(crate) topic: String,
    /// Partition number.
    pub(crate) partition: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every SPEC 9 metric. Cheap to clone behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// `kafka_messages_sent_total{topic,type}`.
    pub(crate) messages_sent: Family<TopicType, Counter>,
    /// `kafka_messages_failed_total{topic,type}`.
    pub(crate) messages_failed: Family<TopicType, Counter>,
    /// `kafka_send_latency_seconds{topic}`.
    pub(crate) send_latency: Family<TopicLabel, Histogram, fn() -> Histogram>,
    /// `kafka_bytes_sent_total{topic}`.
    pub(crate) bytes_sent: Family<TopicLabel, Counter>,
    /// `kafka_messages_received_total{topic}`.
    pub(crate) messages_received: Family<TopicLabel, Counter>,
    /// `kafka_messages_processed_total{topic}`.
    pub(crate) messages_processed: Family<TopicLabel, Counter>,
    /// `kafka_processing_latency_seconds{topic}`.
    pub(crate) processing_latency: Family<TopicLabel, Histogram, fn() -> Histogram>,
    /// `kafka_messages_rejected_total{topic,reason}`.
    pub(crate) messages_rejected: Family<TopicReason, Counter>,
    /// `kafka_dlq_messages_total{topic,reason}`.
    pub(crate) dlq_messages: Family<TopicReason, Counter>,
    /// `kafka_circuit_breaker_state` (0 closed, 1 open, 2 half-open).
    pub(crate) circuit_breaker_state: Gauge,
    /// `kafka_consumer_lag{topic,partition}`.
    pub(crate) consumer_lag: Family<TopicPartition, Gauge>,
    /// `kafka_producer_throttled_seconds_total{topic}`: time sends waited for the rate limit.
    pub(crate) producer_throttled_seconds: Family<TopicLabel, Counter<f64, AtomicU64>>,
    /// `meshbus_trust_keys`: keys in the control trust store in force.
    pub(crate) trust_keys: Gauge,
    /// `meshbus_policy_allowlist_keys`: keys in the `ai.policy.v1` allowlist file in force.
    pub(crate) policy_allowlist_keys: Gauge,
    /// `meshbus_trust_reload_failures_total{file}`: reloads refused (the last good store stays).
    pub(crate) trust_reload_failures: Family<FileLabel, Counter>,
    /// `kafka_messages_redelivered_total{topic}`: records handed out again at a place already
    /// handled or dead-lettered (a lost commit, a rebalance): skipped and committed (SPEC 3e).
    pub(crate) messages_redelivered: Family<TopicLabel, Counter>,
    /// `meshbus_replay_warmup_records_total{topic}`: records read back into the replay guard
    /// at assignment.
    pub(crate) warmup_records: Family<TopicLabel, Counter>,
    /// `meshbus_replay_warmup_seconds{topic}`: how long each partition's read-back took.
    pub(crate) warmup_seconds: Family<TopicLabel, Histogram, fn() -> Histogram>,
    /// `meshbus_replay_warmup_cut_total{topic,bound}`: read-backs cut short (`records`,
    /// `time`): replays of what was not read are not refused.
    pub(crate) warmup_cut: Family<TopicBound, Counter>,
    /// `meshbus_replay_warmup_partitions`: partitions reading back now (not ready until 0).
    pub(crate) warmup_partitions: Gauge,
}

/// `{topic, bound}` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicBound {
    /// Topic.
    pub(crate) topic: String,
    /// Which bound cut the read-back short: `records` or `time`.
    pub(crate) bound: String,
}

fn warmup_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// `{file}` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FileLabel {
    /// The file at fault.
    pub(crate) file: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            messages_sent: Family::default(),
            messages_failed: Family::default(),
            send_latency: Family::new_with_constructor(latency),
            bytes_sent: Family::default(),
            messages_received: Family::default(),
            messages_processed: Family::default(),
            processing_latency: Family::new_with_constructor(latency),
            messages_rejected: Family::default(),
            dlq_messages: Family::default(),
            circuit_breaker_state: Gauge::default(),
            consumer_lag: Family::default(),
            producer_throttled_seconds: Family::default(),
            trust_keys: Gauge::default(),
            policy_allowlist_keys: Gauge::default(),
            trust_reload_failures: Family::default(),
            messages_redelivered: Family::default(),
            warmup_records: Family::default(),
            warmup_seconds: Family::new_with_constructor(warmup_buckets),
            warmup_cut: Family::default(),
            warmup_partitions: Gauge::default(),
        };
        m.register_all(&mut registry);
        m.register_replay(&mut registry);
        Arc::new(Metrics { registry, ..m })
    }

    /// Registers every metric under its SPEC 9 (or meshbus) name.
    fn register_all(&self, registry: &mut Registry) {
        registry.register(
            "kafka_messages_sent",
            "Records acknowledged by the broker",
            self.messages_sent.clone(),
        );
        registry.register(
            "kafka_messages_failed",
            "Sends that failed after retries or were refused",
            self.messages_failed.clone(),
        );
        registry.register(
            "kafka_send_latency_seconds",
            "Send latency including retries",
            self.send_latency.clone(),
        );
        registry.register(
            "kafka_bytes_sent",
            "Record value bytes acknowledged",
            self.bytes_sent.clone(),
        );
        registry.register(
            "kafka_messages_received",
            "Records fetched",
            self.messages_received.clone(),
        );
        registry.register(
            "kafka_messages_processed",
            "Records verified and handled",
            self.messages_processed.clone(),
        );
        registry.register(
            "kafka_processing_latency_seconds",
            "Verify plus handler time",
            self.processing_latency.clone(),
        );
        registry.register(
            "kafka_messages_rejected",
            "Records refused by the verifier, by reason",
            self.messages_rejected.clone(),
        );
        registry.register(
            "kafka_dlq_messages",
            "Records written to the dead-letter topic, by reason",
            self.dlq_messages.clone(),
        );
        registry.register(
            "kafka_circuit_breaker_state",
            "Producer circuit breaker: 0 closed, 1 open, 2 half-open",
            self.circuit_breaker_state.clone(),
        );
        registry.register(
            "kafka_consumer_lag",
            "High watermark minus next offset",
            self.consumer_lag.clone(),
        );
        registry.register(
            "kafka_producer_throttled_seconds",
            "Time sends waited for the producer rate limit",
            self.producer_throttled_seconds.clone(),
        );
        registry.register(
            "meshbus_trust_keys",
            "Keys in the control trust store in force",
            self.trust_keys.clone(),
        );
        registry.register(
            "meshbus_policy_allowlist_keys",
            "Keys in the ai.policy.v1 allowlist file in force",
            self.policy_allowlist_keys.clone(),
        );
        registry.register(
            "meshbus_trust_reload_failures",
            "Trust store and allowlist reloads refused (the last good one stays), by file at fault",
            self.trust_reload_failures.clone(),
        );
    }

    /// Registers the replay guard's metrics (SPEC 3e).
    fn register_replay(&self, registry: &mut Registry) {
        registry.register(
            "kafka_messages_redelivered",
            "Records handed out again at a place already handled or dead-lettered, skipped",
            self.messages_redelivered.clone(),
        );
        registry.register(
            "meshbus_replay_warmup_records",
            "Records read back into the replay guard at assignment",
            self.warmup_records.clone(),
        );
        registry.register(
            "meshbus_replay_warmup_seconds",
            "Duration of each partition's read-back into the replay guard",
            self.warmup_seconds.clone(),
        );
        registry.register(
            "meshbus_replay_warmup_cut",
            "Read-backs cut short by a bound (replays of what was not read are not refused)",
            self.warmup_cut.clone(),
        );
        registry.register(
            "meshbus_replay_warmup_partitions",
            "Partitions reading back into the replay guard now",
            self.warmup_partitions.clone(),
        );
    }

    /// The registry, to merge into a host's own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Labels helpers.
    pub(crate) fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }
    /// `{topic,type}`.
    pub(crate) fn topic_type(topic: &str, kind: &str) -> TopicType {
        TopicType {
            topic: topic.to_string(),
            r#type: kind.to_string(),
        }
    }
    /// `{topic,reason}`.
    pub(crate) fn topic_reason(topic: &str, reason: &str) -> TopicReason {
        TopicReason {
            topic: topic.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_spec() {
        let m = Metrics::new();
        m.messages_sent
            .get_or_create(&Metrics::topic_type("t", "anomaly"))
            .inc();
        m.messages_rejected
            .get_or_create(&Metrics::topic_reason("t", "bad_signature"))
            .inc();
        m.send_latency
            .get_or_create(&Metrics::topic("t"))
            .observe(0.01);
        m.consumer_lag
            .get_or_create(&TopicPartition {
                topic: "t".into(),
                partition: "0".into(),
            })
            .set(3);
        m.dlq_messages
            .get_or_create(&Metrics::topic_reason("t", "replayed"))
            .inc();
        m.bytes_sent.get_or_create(&Metrics::topic("t")).inc_by(10);
        m.producer_throttled_seconds
            .get_or_create(&Metrics::topic("t"))
            .inc_by(0.25);
        let text = m.encode();
        for name in [
            "kafka_messages_sent_total{topic=\"t\",type=\"anomaly\"} 1",
            "kafka_messages_rejected_total{topic=\"t\",reason=\"bad_signature\"} 1",
            "kafka_send_latency_seconds_count{topic=\"t\"} 1",
            "kafka_circuit_breaker_state 0",
            "kafka_consumer_lag{topic=\"t\",partition=\"0\"} 3",
            "kafka_dlq_messages_total{topic=\"t\",reason=\"replayed\"} 1",
            "kafka_bytes_sent_total{topic=\"t\"} 10",
            "kafka_producer_throttled_seconds_total{topic=\"t\"} 0.25",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
