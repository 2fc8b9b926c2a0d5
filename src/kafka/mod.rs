//! The Kafka layer: the only module that names the Kafka client crate (`krafka`, pinned to an
//! exact version in Cargo.toml). It builds one connection pool per process role from
//! [`Config`] (TLS, mTLS, SASL, timeouts, memory bounds), hands out what the producer,
//! consumer, DLQ writer, CLI and tests need, and maps the client's errors onto
//! [`KafkaError`]. Upgrading or forking the client touches this folder only; meshbus's
//! Apache Kafka tests are the gate for every upgrade.
//!
//! - [`Client`]: the pool (cheap to clone; the consumer and its DLQ writer share one).
//! - [`Sender`] (`produce.rs`): acks=all, idempotent by default, compression, bounded buffer.
//! - [`GroupConsumer`] (`consume.rs`): a classic-protocol group member with manual commits and
//!   an awaited revocation callback.
//! - [`Reader`]: reads a partition range without a group (DLQ listing, tools, tests).

mod consume;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod produce;

pub use consume::{EventFuture, GroupConsumer, GroupSpec, RebalanceEvents};
pub use error::KafkaError;
pub use produce::{Queued, Sender};

use crate::config::{Config, SaslMechanism};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest Kafka response meshbus accepts (a fetch is bounded below this by its own caps).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest fetch response of a [`Reader`] (one partition at a time).
const READER_FETCH_BYTES: i32 = 4 * 1024 * 1024;

/// The longest one request may take while its response is still arriving, in request timeouts:
/// the request timeout bounds silence (no byte of an owed response for that long), so a large
/// fetch over a slow link completes instead of starting over (vendored krafka, change 10).
pub(crate) const REQUEST_TIMEOUT_MAX_FACTOR: u32 = 6;

/// Largest decompressed record batch meshbus accepts (decompression bombs stop here).
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// A record as read from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key (null stays `None`).
    pub key: Option<Vec<u8>>,
    /// Value (null stays `None`), shared with the fetched batch rather than copied.
    pub value: Option<bytes::Bytes>,
    /// Headers (a null header value reads as empty).
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Set when this is not a record but the place of one that could not be decoded (a
    /// corrupt batch at this offset): why. Key, value and headers are then empty.
    pub undecodable: Option<String>,
}

impl InRecord {
    /// The place of an undecodable batch at `offset`, to be dead-lettered like a record.
    pub fn undecodable(topic: &str, partition: i32, offset: i64, why: String) -> InRecord {
        InRecord {
            topic: topic.to_string(),
            partition,
            offset,
            key: None,
            value: None,
            headers: BTreeMap::new(),
            undecodable: Some(why),
        }
    }
}

impl From<krafka::ConsumerRecord> for InRecord {
    fn from(r: krafka::ConsumerRecord) -> Self {
        InRecord {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            key: r.key.map(|b| b.to_vec()),
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.map(|b| b.to_vec()).unwrap_or_default()))
                .collect(),
            undecodable: None,
        }
    }
}

/// A connection pool to the cluster, built from [`Config`]. Clone it to share.
#[derive(Clone)]
pub struct Client {
    kafka: krafka::Kafka,
    config: Config,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

fn security(config: &Config) -> Result<krafka::auth::AuthConfig, KafkaError> {
    use krafka::auth::{AuthConfig, TlsConfig};
    let path = |p: &std::path::Path| p.display().to_string();
    let tls = match &config.tls {
        None => None,
        Some(t) => {
            let mut c = TlsConfig::new();
            if let Some(ca) = &t.ca_cert {
                std::fs::metadata(ca).map_err(|e| {
                    KafkaError::config("KAFKA_CA_CERT", format!("{}: {e}", ca.display()))
                })?;
                c = c.with_ca_cert(path(ca));
            }
            match (&t.client_cert, &t.client_key) {
                (Some(cert), Some(key)) => {
                    // The TLS client key gets the signing key's guard: 0600 in staging and
                    // production.
                    crate::contract::keys::check_private_key_file(
                        key,
                        config.environment.key_policy(),
                    )
                    .map_err(|e| KafkaError::config("KAFKA_CLIENT_KEY", e.to_string()))?;
                    c = c.with_client_cert(path(cert), path(key))
                }
                (None, None) => {}
                _ => {
                    return Err(KafkaError::config(
                        "KAFKA_CLIENT_CERT",
                        "mTLS needs both KAFKA_CLIENT_CERT and KAFKA_CLIENT_KEY",
                    ))
                }
            }
            Some(c)
        }
    };
    let auth = match &config.sasl {
        Some(s) => {
            let (u, p) = (s.username.clone(), s.password.expose().to_string());
            let a = match s.mechanism {
                SaslMechanism::ScramSha512 => AuthConfig::sasl_scram_sha512(u, p),
                SaslMechanism::ScramSha256 => AuthConfig::sasl_scram_sha256(u, p),
                SaslMechanism::Plain => AuthConfig::sasl_plain(u, p),
            };
            match tls {
                Some(t) => a.with_tls(t),
                None => a,
            }
        }
        None => match tls {
            Some(t) => AuthConfig::ssl(t),
            None => AuthConfig::plaintext(),
        },
    };
    Ok(auth)
}

impl Client {
    /// Connects to the bootstrap brokers with TLS and SASL as configured and reads the
    /// cluster's metadata. TLS and credential problems fail at once with a typed error; a
    /// broker that does not answer (the TCP connect, the TLS handshake, SASL or the metadata
    /// request) fails with [`KafkaError::Timeout`] after the request timeout; a refusing one at
    /// once with a retriable [`KafkaError::Broker`].
    pub async fn connect(config: &Config) -> Result<Client, KafkaError> {
        config.validate()?;
        let timeout = config.request_timeout;
        let builder = krafka::Kafka::builder(config.brokers.join(","))
            .client_id(format!("meshbus-node-{}", config.node_id))
            .security(security(config)?)
            .request_timeout(timeout)
            .request_timeout_max(timeout.saturating_mul(REQUEST_TIMEOUT_MAX_FACTOR))
            .connect_timeout(timeout)
            .allow_auto_create_topics(false)
            .max_response_size(MAX_RESPONSE_BYTES)
            .metadata_max_age(Duration::from_secs(60));
        // krafka bounds each step itself and says which one ran out of time: TCP connect, TLS
        // handshake and SASL within the connect timeout, then the metadata request within the
        // request timeout. This guard only backs those bounds up, so it allows both: at the
        // same bound it raced them, and when it won the error no longer named the step.
        let backstop = timeout.saturating_mul(2);
        let kafka = match tokio::time::timeout(backstop, builder.connect()).await {
            Ok(r) => r.map_err(|e| KafkaError::from(e).timed_out_after(timeout))?,
            Err(_) => {
                return Err(KafkaError::Timeout {
                    op: "connect".into(),
                    after: backstop,
                })
            }
        };
        Ok(Client {
            kafka,
            config: config.clone(),
        })
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Creates `topic` with `partitions` partitions and the broker's default replication
    /// (already existing is fine).
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        let t = krafka::admin::NewTopic::new(topic, partitions, -1)?;
        let r = self
            .kafka
            .admin()
            .create_topics([t], Default::default())
            .await?;
        match r.into_values().next() {
            Some(Err(krafka::KrafkaError::Broker {
                code: krafka::error::ErrorCode::TopicAlreadyExists,
                ..
            })) => Ok(()),
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Number of partitions of `topic`.
    pub async fn partitions(&self, topic: &str) -> Result<i32, KafkaError> {
        let d = self
            .kafka
            .admin()
            .describe_topics([topic], Default::default())
            .await?;
        match d.into_values().next() {
            Some(Ok(t)) => Ok(t.partitions.len() as i32),
            Some(Err(e)) => Err(e.into()),
            None => Err(KafkaError::Broker {
                detail: format!("topic {topic} not described"),
                code: None,
                retriable: true,
            }),
        }
    }

    /// A reader without a group.
    pub async fn reader(&self) -> Result<Reader, KafkaError> {
        let c = self
            .kafka
            .consumer_without_group()
            .enable_auto_commit(false)
            // A position deleted by retention mid-read goes on at the oldest record kept.
            .auto_offset_reset(krafka::consumer::AutoOffsetReset::Earliest)
            .max_decompressed_size(MAX_DECOMPRESSED_BATCH_BYTES)
            .fetch_max_wait(Duration::from_millis(200))
            // A reader reads history (the replay read-back, DLQ listings): large fetches and
            // polls keep it from waiting on a round trip per 500 records.
            .max_partition_fetch_bytes(READER_FETCH_BYTES)
            .fetch_max_bytes(READER_FETCH_BYTES)
            .max_poll_records(8192)
            .max_buffered_records(consume::buffered_records_for(READER_FETCH_BYTES))
            .metrics_push(false)
            .build()
            .await?;
        Ok(Reader {
            consumer: c,
            // One fetch may be in flight for this long over a slow link (its bytes arriving):
            // polls that return nothing meanwhile are not a stalled read.
            timeout: self.timeout().saturating_mul(REQUEST_TIMEOUT_MAX_FACTOR),
        })
    }

    pub(crate) fn kafka(&self) -> &krafka::Kafka {
        &self.kafka
    }
}

/// Where a [`Reader`] scan stands.
#[derive(Debug, Clone)]
pub struct Scan {
    topic: String,
    partition: i32,
    next: i64,
    to: i64,
}

/// Reads partitions from given offsets, without a consumer group.
pub struct Reader {
    consumer: krafka::consumer::Consumer,
    /// How long polls may return nothing before a scan fails (one fetch's hard bound).
    timeout: Duration,
}

impl Reader {
    /// `(earliest, end)` offsets of a partition.
    pub async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
        Ok(self.consumer.fetch_watermarks(topic, partition).await?)
    }

    /// The first offset of `topic`/`partition` whose record timestamp is at or after
    /// `timestamp_ms` (ListOffsets by time), or `None` when no record is that new.
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, KafkaError> {
        let mut found = self
            .consumer
            .offsets_for_times(&[(topic, partition)], timestamp_ms)
            .await;
        match found.remove(&(topic.to_string(), partition)) {
            Some(Ok(o)) if o >= 0 => Ok(Some(o)),
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => Err(e.into()),
            None => Err(KafkaError::Broker {
                detail: format!("no offset looked up for {topic}/{partition}"),
                code: None,
                retriable: true,
            }),
        }
    }

    /// Calls `each` for every record of `topic`/`partition` from `from` up to (not including)
    /// `to`, in offset order, without holding more than one fetch in memory.
    pub async fn scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        mut each: impl FnMut(InRecord),
    ) -> Result<(), KafkaError> {
        let mut scan = self.start_scan(topic, partition, from, to).await?;
        while let Some(batch) = self.next_batch(&mut scan).await? {
            batch.into_iter().for_each(&mut each);
        }
        Ok(())
    }

    /// Positions the reader for [`Reader::next_batch`] over `topic`/`partition` from `from`
    /// up to (not including) `to`.
    pub async fn start_scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Scan, KafkaError> {
        if from < to {
            self.consumer.assign(topic, vec![partition]).await?;
            self.consumer.seek(topic, partition, from).await?;
        }
        Ok(Scan {
            topic: topic.to_string(),
            partition,
            next: from,
            to,
        })
    }

    /// The next fetch of a scan, in offset order (`None` once the end is reached): memory
    /// holds one fetch at a time, however long the partition.
    pub async fn next_batch(&self, scan: &mut Scan) -> Result<Option<Vec<InRecord>>, KafkaError> {
        let mut idle = Duration::ZERO;
        while scan.next < scan.to {
            let batch = self.consumer.poll(Duration::from_millis(500)).await?;
            if batch.is_empty() {
                // Transaction markers and compacted gaps hold no record: the position tells.
                if let Some(p) = self.consumer.position(&scan.topic, scan.partition).await {
                    if p >= scan.to {
                        break;
                    }
                }
                idle += Duration::from_millis(500);
                if idle > self.timeout {
                    return Err(KafkaError::Timeout {
                        op: format!("read {}/{} at {}", scan.topic, scan.partition, scan.next),
                        after: idle,
                    });
                }
                continue;
            }
            let mut out = Vec::with_capacity(batch.len());
            let mut past_end = false;
            for r in batch {
                if r.offset >= scan.to {
                    // The last offsets before `to` hold no record (compacted away, markers):
                    // the scan is over, however the fetch ran ahead.
                    past_end = true;
                    continue;
                }
                if r.offset < scan.next {
                    continue;
                }
                scan.next = r.offset + 1;
                out.push(r.into());
            }
            if past_end {
                scan.next = scan.to;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        scan.next = scan.to;
        Ok(None)
    }

    /// Closes the reader.
    pub async fn close(self) {
        let _ = self.consumer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, Tls};

    #[cfg(unix)]
    #[test]
    fn a_readable_tls_client_key_is_refused_in_production_naming_the_variable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let mut config = Config {
            environment: Environment::Production,
            tls: Some(Tls {
                ca_cert: Some(file("ca.pem", 0o644)),
                client_cert: Some(file("client.pem", 0o644)),
                client_key: Some(file("client.key", 0o644)),
            }),
            ..Config::default()
        };
        let e = security(&config).expect_err("0644 key refused");
        assert!(e.to_string().contains("KAFKA_CLIENT_KEY"), "{e}");
        config.environment = Environment::Development;
        assert!(security(&config).is_ok(), "development allows it");
        config.environment = Environment::Staging;
        let key = config.tls.as_ref().unwrap().client_key.clone().unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(security(&config).is_ok(), "0600 is fine");
    }
}
