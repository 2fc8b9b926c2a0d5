//! Dead-letter records (SPEC 7): the original value and key byte for byte, the original headers,
//! and the failure headers. Building, writing (with retries until acknowledged), reading back,
//! and the headers to drop when a record is replayed to its original topic.

use crate::producer::{Delivery, Producer, SendError};
use std::collections::BTreeMap;

/// `original_topic` header.
pub const ORIGINAL_TOPIC: &str = "original_topic";
/// `original_partition` header (decimal).
pub const ORIGINAL_PARTITION: &str = "original_partition";
/// `original_offset` header (decimal).
pub const ORIGINAL_OFFSET: &str = "original_offset";
/// `reason` header: a SPEC 4 reason code or `handler_failed`.
pub const REASON: &str = "reason";
/// `error` header: human-readable detail.
pub const ERROR: &str = "error";
/// `node_id` header.
pub const NODE_ID: &str = "node_id";
/// `failed_at_ms` header (decimal).
pub const FAILED_AT_MS: &str = "failed_at_ms";

/// Every header meshbus adds to a dead letter.
pub const DLQ_HEADERS: [&str; 7] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    REASON,
    ERROR,
    NODE_ID,
    FAILED_AT_MS,
];

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
    /// The original value.
    pub value: Vec<u8>,
    /// The original headers.
    pub original_headers: BTreeMap<String, Vec<u8>>,
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
        h
    }

    /// Reads a dead letter back from a DLQ record.
    pub fn from_record(
        key: Option<Vec<u8>>,
        value: Vec<u8>,
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
        Ok(DeadLetter {
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

    /// Writes this dead letter to `topic` once; the caller decides about retrying.
    pub async fn write(&self, producer: &Producer, topic: &str) -> Result<Delivery, SendError> {
        producer
            .send_raw(topic, self.key.clone(), self.value.clone(), self.headers())
            .await
    }

    /// Sends the original record (value, key and original headers) back to its original topic.
    pub async fn replay(&self, producer: &Producer) -> Result<Delivery, SendError> {
        producer
            .send_raw(
                &self.original_topic,
                self.key.clone(),
                self.value.clone(),
                self.original_headers.clone(),
            )
            .await
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
            value: vec![1, 2, 3],
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
        let back = DeadLetter::from_record(None, vec![1, 2, 3], &h).unwrap();
        assert_eq!(back.original_headers, d.original_headers);
        assert_eq!(back.reason, "bad_signature");
        assert_eq!(back.original_offset, 41);
    }

    #[test]
    fn a_record_without_the_headers_is_not_a_dead_letter() {
        let mut h = letter().headers();
        h.remove(REASON);
        assert_eq!(
            DeadLetter::from_record(None, vec![], &h)
                .unwrap_err()
                .header,
            REASON
        );
        let mut h = letter().headers();
        h.insert(ORIGINAL_OFFSET.into(), b"4x".to_vec());
        assert!(DeadLetter::from_record(None, vec![], &h).is_err());
    }
}
