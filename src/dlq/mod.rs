//! Dead-letter records (SPEC 7): the original value and key byte for byte, the original headers,
//! and the failure headers. Building, writing, reading back, and the headers to drop when a
//! record is replayed to its original topic. A value the DLQ cannot hold (over the 1 MiB
//! producer limit, or refused by the DLQ topic as too large) is omitted: the dead letter then
//! has a null value and says how big the original was and its SHA-256, and the original stays
//! readable at its topic, partition and offset.

use crate::contract::limits::MAX_RECORD_BYTES;
use crate::kafka::KafkaError;
use crate::producer::{Delivery, Producer, SendError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `original_topic` header.
pub(crate) const ORIGINAL_TOPIC: &str = "original_topic";
/// `original_partition` header (decimal).
pub(crate) const ORIGINAL_PARTITION: &str = "original_partition";
/// `original_offset` header (decimal).
pub(crate) const ORIGINAL_OFFSET: &str = "original_offset";
/// `reason` header: a SPEC 4 reason code or `handler_failed`.
pub(crate) const REASON: &str = "reason";
/// `error` header: human-readable detail.
pub(crate) const ERROR: &str = "error";
/// `node_id` header.
pub const NODE_ID: &str = "node_id";
/// `failed_at_ms` header (decimal).
pub(crate) const FAILED_AT_MS: &str = "failed_at_ms";

/// `value_omitted` header (`true`): the value was too large for the DLQ.
pub(crate) const VALUE_OMITTED: &str = "value_omitted";
/// `original_size` header (decimal bytes), with `value_omitted`.
pub(crate) const ORIGINAL_SIZE: &str = "original_size";
/// `original_sha256` header (hex), with `value_omitted`.
pub(crate) const ORIGINAL_SHA256: &str = "original_sha256";

/// Every header meshbus adds to a dead letter.
pub(crate) const DLQ_HEADERS: [&str; 10] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    REASON,
    ERROR,
    NODE_ID,
    FAILED_AT_MS,
    VALUE_OMITTED,
    ORIGINAL_SIZE,
    ORIGINAL_SHA256,
];

/// What is known of a value the DLQ could not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OmittedValue {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The longest `error` text kept (details are for people; the reason code is for machines).
const MAX_ERROR_CHARS: usize = 512;

/// A record that could not be handled, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic the record was read from.
    pub original_topic: String,
    /// Its partition.
    pub original_partition: i32,
    /// Its offset.
    pub original_offset: i64,
    /// Reason code.
    pub reason: String,
    /// Detail.
    pub error: String,
    /// Node that failed it.
    pub node_id: String,
    /// When, ms since the epoch.
    pub failed_at_ms: i64,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original value (a null value stays `None`; also `None` when omitted).
    pub value: Option<Vec<u8>>,
    /// Set when the value was too large for the DLQ and left out.
    pub omitted: Option<OmittedValue>,
    /// The original headers.
    pub original_headers: BTreeMap<String, Vec<u8>>,
}

/// Why a dead letter could not be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The dead letter does not hold the value; the original is still at its topic.
    #[error("value omitted ({size} bytes, sha256 {sha256}); the original is at {topic}/{partition}@{offset}")]
    ValueOmitted {
        /// Original size.
        size: u64,
        /// Original SHA-256, hex.
        sha256: String,
        /// Original topic.
        topic: String,
        /// Original partition.
        partition: i32,
        /// Original offset.
        offset: i64,
    },
    /// The send failed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Why a record on the DLQ topic is not a meshbus dead letter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a dead letter: header {header} {problem}")]
pub struct NotADeadLetter {
    /// The header at fault.
    pub header: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl DeadLetter {
    /// The record's headers: the original ones, then the SPEC 7 ones (which win on a clash).
    pub fn headers(&self) -> BTreeMap<String, Vec<u8>> {
        let mut h = self.original_headers.clone();
        let error: String = self.error.chars().take(MAX_ERROR_CHARS).collect();
        for (k, v) in [
            (ORIGINAL_TOPIC, self.original_topic.clone()),
            (ORIGINAL_PARTITION, self.original_partition.to_string()),
            (ORIGINAL_OFFSET, self.original_offset.to_string()),
            (REASON, self.reason.clone()),
            (ERROR, error),
            (NODE_ID, self.node_id.clone()),
            (FAILED_AT_MS, self.failed_at_ms.to_string()),
        ] {
            h.insert(k.to_string(), v.into_bytes());
        }
        for k in [VALUE_OMITTED, ORIGINAL_SIZE, ORIGINAL_SHA256] {
            h.remove(k);
        }
        if let Some(o) = &self.omitted {
            h.insert(VALUE_OMITTED.into(), b"true".to_vec());
            h.insert(ORIGINAL_SIZE.into(), o.size.to_string().into_bytes());
            h.insert(ORIGINAL_SHA256.into(), o.sha256.clone().into_bytes());
        }
        h
    }

    /// Leaves the value out (SPEC 7): null value, plus its size and SHA-256.
    pub(crate) fn omit_value(&mut self) {
        if let Some(v) = self.value.take() {
            self.omitted = Some(OmittedValue {
                size: v.len() as u64,
                sha256: hex::encode(Sha256::digest(&v)),
            });
        }
    }

    /// Reads a dead letter back from a DLQ record.
    pub fn from_record(
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: &BTreeMap<String, Vec<u8>>,
    ) -> Result<DeadLetter, NotADeadLetter> {
        let text = |name: &'static str| -> Result<String, NotADeadLetter> {
            let v = headers.get(name).ok_or(NotADeadLetter {
                header: name,
                problem: "is missing",
            })?;
            String::from_utf8(v.clone()).map_err(|_| NotADeadLetter {
                header: name,
                problem: "is not UTF-8",
            })
        };
        let number = |name: &'static str| -> Result<i64, NotADeadLetter> {
            text(name)?.parse().map_err(|_| NotADeadLetter {
                header: name,
                problem: "is not a decimal number",
            })
        };
        let omitted = match headers.get(VALUE_OMITTED).map(Vec::as_slice) {
            Some(b"true") => Some(OmittedValue {
                size: number(ORIGINAL_SIZE)?.max(0) as u64,
                sha256: text(ORIGINAL_SHA256)?,
            }),
            Some(_) => {
                return Err(NotADeadLetter {
                    header: VALUE_OMITTED,
                    problem: "is not `true`",
                })
            }
            None => None,
        };
        Ok(DeadLetter {
            omitted,
            original_topic: text(ORIGINAL_TOPIC)?,
            original_partition: number(ORIGINAL_PARTITION)? as i32,
            original_offset: number(ORIGINAL_OFFSET)?,
            reason: text(REASON)?,
            error: text(ERROR)?,
            node_id: text(NODE_ID)?,
            failed_at_ms: number(FAILED_AT_MS)?,
            key,
            value,
            original_headers: headers
                .iter()
                .filter(|(k, _)| !DLQ_HEADERS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Writes this dead letter to `topic` once (the caller decides about retrying). A value
    /// over the 1 MiB limit, or one the DLQ topic refuses as too large, is omitted (SPEC 7) and
    /// the letter sent again at once without it.
    pub async fn write(&mut self, producer: &Producer, topic: &str) -> Result<Delivery, SendError> {
        if self
            .value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_RECORD_BYTES)
        {
            self.omit_value();
        }
        match self.send(producer, topic).await {
            Err(SendError::Transport {
                source: KafkaError::RecordTooLarge(_),
                ..
            }) if self.value.is_some() => {
                self.omit_value();
                self.send(producer, topic).await
            }
            other => other,
        }
    }

    async fn send(&self, producer: &Producer, topic: &str) -> Result<Delivery, SendError> {
        producer
            .send_raw_value(topic, self.key.clone(), self.value.clone(), self.headers())
            .await
    }

    /// Sends the original record (value, key and original headers) back to its original topic;
    /// a null value stays null. A letter whose value was omitted cannot be replayed.
    pub async fn replay(&self, producer: &Producer) -> Result<Delivery, ReplayError> {
        if let Some(o) = &self.omitted {
            return Err(ReplayError::ValueOmitted {
                size: o.size,
                sha256: o.sha256.clone(),
                topic: self.original_topic.clone(),
                partition: self.original_partition,
                offset: self.original_offset,
            });
        }
        Ok(producer
            .send_raw_value(
                &self.original_topic,
                self.key.clone(),
                self.value.clone(),
                self.original_headers.clone(),
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> DeadLetter {
        DeadLetter {
            original_topic: "ai.anomalies.v1".into(),
            original_partition: 2,
            original_offset: 41,
            reason: "bad_signature".into(),
            error: "x".repeat(2000),
            node_id: "3".into(),
            failed_at_ms: 1_700_000_000_123,
            key: None,
            value: Some(vec![1, 2, 3]),
            omitted: None,
            original_headers: [("trace".to_string(), b"abc".to_vec())].into(),
        }
    }

    #[test]
    fn headers_follow_spec_7_and_read_back() {
        let d = letter();
        let h = d.headers();
        assert_eq!(h[ORIGINAL_PARTITION], b"2");
        assert_eq!(h[ORIGINAL_OFFSET], b"41");
        assert_eq!(h[FAILED_AT_MS], b"1700000000123");
        assert_eq!(h["trace"], b"abc");
        assert_eq!(h[ERROR].len(), MAX_ERROR_CHARS);
        let back = DeadLetter::from_record(None, Some(vec![1, 2, 3]), &h).unwrap();
        assert_eq!(back.original_headers, d.original_headers);
        assert_eq!(back.reason, "bad_signature");
        assert_eq!(back.original_offset, 41);
    }

    #[test]
    fn a_record_without_the_headers_is_not_a_dead_letter() {
        let mut h = letter().headers();
        h.remove(REASON);
        assert_eq!(
            DeadLetter::from_record(None, None, &h).unwrap_err().header,
            REASON
        );
        let mut h = letter().headers();
        h.insert(ORIGINAL_OFFSET.into(), b"4x".to_vec());
        assert!(DeadLetter::from_record(None, None, &h).is_err());
    }

    #[test]
    fn an_omitted_value_is_described_by_size_and_hash_and_reads_back() {
        let mut d = letter();
        d.value = Some(vec![7u8; 3]);
        d.omit_value();
        assert_eq!(d.value, None);
        let h = d.headers();
        assert_eq!(h[VALUE_OMITTED], b"true");
        assert_eq!(h[ORIGINAL_SIZE], b"3");
        assert_eq!(
            String::from_utf8(h[ORIGINAL_SHA256].clone()).unwrap(),
            hex::encode(Sha256::digest([7u8; 3]))
        );
        let back = DeadLetter::from_record(None, None, &h).unwrap();
        assert_eq!(back.omitted, d.omitted);
        assert!(!back.original_headers.contains_key(VALUE_OMITTED));
        // An original record's own value_omitted header does not make a letter omitted.
        let mut plain = letter();
        plain
            .original_headers
            .insert(VALUE_OMITTED.into(), b"true".to_vec());
        assert!(!plain.headers().contains_key(VALUE_OMITTED));
    }
}
