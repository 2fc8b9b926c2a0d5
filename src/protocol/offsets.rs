//! Committed offsets: OffsetFetch (v5) and OffsetCommit (v7), sent to the group coordinator.

use super::{api_error, s, Connection};
use crate::transport::TransportError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use std::collections::BTreeMap;

/// A topic and partition.
pub type TopicPartition = (String, i32);

fn by_topic<V: Clone>(items: &BTreeMap<TopicPartition, V>) -> BTreeMap<&str, Vec<(i32, V)>> {
    let mut out: BTreeMap<&str, Vec<(i32, V)>> = BTreeMap::new();
    for ((t, p), v) in items {
        out.entry(t.as_str()).or_default().push((*p, v.clone()));
    }
    out
}

/// The committed offsets of `group` for `partitions`; partitions without one are absent.
pub async fn fetch(
    conn: &Connection,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>, TransportError> {
    let wanted: BTreeMap<TopicPartition, ()> =
        partitions.iter().map(|tp| (tp.clone(), ())).collect();
    let topics = by_topic(&wanted)
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s(t)))
                .with_partition_indexes(ps.into_iter().map(|(p, _)| p).collect())
        })
        .collect();
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(topics));
    let resp = conn.request(&req, 5).await?;
    if resp.error_code != 0 {
        return Err(api_error("offset fetch", resp.error_code));
    }
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(api_error("offset fetch", p.error_code));
            }
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (the next offset to read, per partition) for this member and generation.
/// Any partition-level error fails the whole commit, naming the code.
pub async fn commit(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<(), TransportError> {
    let topics = by_topic(offsets)
        .into_iter()
        .map(|(t, ps)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                        })
                        .collect(),
                )
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(topics);
    let resp = conn.request(&req, 7).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(api_error("offset commit", p.error_code));
            }
        }
    }
    Ok(())
}
