//! Idempotent produce: Metadata (v7) for partition leaders, InitProducerId (v1) for a producer
//! id and epoch, and Produce (v7) with record batches that carry the id, epoch and sequence.

use super::{api_error, s, Connection};
use crate::transport::TransportError;
use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::collections::BTreeMap;

/// The leader address (`host:port`) of every partition of `topic`, by partition index.
pub async fn leaders(conn: &Connection, topic: &str) -> Result<Vec<String>, TransportError> {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))
        ]));
    let resp = conn.request(&req, 7).await?;
    let brokers: BTreeMap<i32, String> = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .ok_or_else(|| TransportError::Broker {
            detail: format!("topic {topic} is not in the metadata"),
            retriable: true,
        })?;
    if t.error_code != 0 {
        return Err(api_error(&format!("metadata for {topic}"), t.error_code));
    }
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    parts
        .iter()
        .map(|p| {
            brokers
                .get(&p.leader_id.0)
                .cloned()
                .ok_or_else(|| TransportError::Broker {
                    detail: format!("{topic}/{} has no live leader", p.partition_index),
                    retriable: true,
                })
        })
        .collect()
}

/// A producer id and epoch from the broker (no transactional id: idempotence only).
pub async fn init_producer_id(conn: &Connection) -> Result<(i64, i16), TransportError> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = conn.request(&req, 1).await?;
    if resp.error_code != 0 {
        return Err(api_error("init producer id", resp.error_code));
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// One record to append.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Creation time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// Where a batch goes and who is sending it.
#[derive(Debug, Clone, Copy)]
pub struct BatchTarget<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Producer id (-1 for none).
    pub producer_id: i64,
    /// Producer epoch (-1 for none).
    pub producer_epoch: i16,
    /// Sequence number of the first record (-1 for none).
    pub base_sequence: i32,
}

/// Encodes `records` as one v2 record batch.
pub fn encode_batch(
    target: &BatchTarget<'_>,
    records: &[OutRecord],
    compression: Compression,
) -> Result<Bytes, TransportError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: target.producer_id,
            producer_epoch: target.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if target.base_sequence < 0 {
                -1
            } else {
                target.base_sequence.wrapping_add(i as i32)
            },
            timestamp: r.timestamp_ms,
            key: r.key.clone().map(Bytes::from),
            value: Some(Bytes::from(r.value.clone())),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (s(k), Some(Bytes::from(v.clone()))))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| TransportError::Broker {
        detail: format!("encoding record batch: {e}"),
        retriable: false,
    })?;
    Ok(buf.freeze())
}

/// Appends one encoded batch with acks=all; returns the base offset the leader assigned. A
/// `DUPLICATE_SEQUENCE_NUMBER` answer means the batch was already written by an earlier attempt
/// and is reported as the error code so the caller can decide.
pub async fn produce(
    conn: &Connection,
    topic: &str,
    partition: i32,
    batch: Bytes,
    timeout_ms: i32,
) -> Result<Result<i64, i16>, TransportError> {
    let req = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp = conn.request(&req, 7).await?;
    let p = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| TransportError::Broker {
            detail: format!("no produce answer for {topic}/{partition}"),
            retriable: true,
        })?;
    Ok(match p.error_code {
        0 => Ok(p.base_offset),
        code => Err(code),
    })
}
