//! Group membership APIs: FindCoordinator (v3), JoinGroup (v5), SyncGroup (v3), Heartbeat (v3)
//! and LeaveGroup (v3), plus the consumer protocol's subscription and assignment payloads.
//! Error codes are returned to the caller, which owns the membership state machine.

use super::{api_error, s, Connection};
use crate::transport::TransportError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    consumer_protocol_assignment::TopicPartition, ConsumerProtocolAssignment,
    ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::collections::BTreeMap;
use std::time::Duration;

/// The consumer protocol type, shared with every Kafka client (librdkafka included).
pub const PROTOCOL_TYPE: &str = "consumer";

/// Asks `conn` which broker coordinates `group`; returns its `host:port`.
pub async fn find_coordinator(conn: &Connection, group: &str) -> Result<String, TransportError> {
    let req = FindCoordinatorRequest::default()
        .with_key(s(group))
        .with_key_type(0);
    let resp = conn.request(&req, 3).await?;
    if resp.error_code != 0 {
        return Err(api_error("find coordinator", resp.error_code));
    }
    Ok(format!("{}:{}", resp.host.as_str(), resp.port))
}

/// One member's JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinParams<'a> {
    /// Group id.
    pub group: &'a str,
    /// Member id ("" on first join).
    pub member_id: &'a str,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Topics subscribed to.
    pub topics: &'a [String],
    /// Assignor names in order of preference ("range", "roundrobin").
    pub assignors: &'a [&'a str],
}

/// Sends JoinGroup; the response's error code is for the caller to act on.
pub async fn join(
    conn: &Connection,
    p: &JoinParams<'_>,
) -> Result<JoinGroupResponse, TransportError> {
    let metadata = encode_subscription(p.topics);
    let protocols = p
        .assignors
        .iter()
        .map(|name| {
            JoinGroupRequestProtocol::default()
                .with_name(s(name))
                .with_metadata(metadata.clone())
        })
        .collect();
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s(p.group)))
        .with_session_timeout_ms(p.session_timeout.as_millis() as i32)
        .with_rebalance_timeout_ms(p.rebalance_timeout.as_millis() as i32)
        .with_member_id(s(p.member_id))
        .with_protocol_type(s(PROTOCOL_TYPE))
        .with_protocols(protocols);
    conn.request(&req, 5).await
}

/// Sends SyncGroup (the leader passes every member's assignment, the others none) and returns
/// this member's decoded assignment, or the error code.
pub async fn sync(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &BTreeMap<String, Vec<(String, Vec<i32>)>>,
) -> Result<Result<Vec<(String, Vec<i32>)>, i16>, TransportError> {
    let assignments = assignments
        .iter()
        .map(|(member, parts)| {
            SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(encode_assignment(parts))
        })
        .collect();
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_assignments(assignments);
    let resp = conn.request(&req, 3).await?;
    if resp.error_code != 0 {
        return Ok(Err(resp.error_code));
    }
    decode_assignment(&resp.assignment).map(Ok)
}

/// Sends a heartbeat; returns the error code (0 when all is well).
pub async fn heartbeat(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
) -> Result<i16, TransportError> {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id));
    Ok(conn.request(&req, 3).await?.error_code)
}

/// Leaves the group so its partitions are reassigned at once.
pub async fn leave(conn: &Connection, group: &str, member_id: &str) -> Result<(), TransportError> {
    let req = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_members(vec![MemberIdentity::default().with_member_id(s(member_id))]);
    let resp = conn.request(&req, 3).await?;
    match resp.error_code {
        0 => Ok(()),
        code => Err(api_error("leave group", code)),
    }
}

fn with_version(version: i16, body: impl Encodable, encode_at: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Encoding plain owned values at a supported version cannot fail.
    body.encode(&mut buf, encode_at)
        .expect("consumer protocol payload encodes");
    buf.freeze()
}

/// A subscription payload (consumer protocol v0: the topic list).
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let sub =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    with_version(0, sub, 0)
}

/// The topics of a member's subscription payload (any version a Kafka client sends).
pub fn decode_subscription(bytes: &Bytes) -> Result<Vec<String>, TransportError> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(bad_payload("subscription", "too short"));
    }
    let version = buf.get_i16().clamp(0, 3);
    check_subscription(&buf, version).map_err(|e| bad_payload("subscription", e))?;
    let sub = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map_err(|e| bad_payload("subscription", e))?;
    Ok(sub.topics.iter().map(|t| t.to_string()).collect())
}

/// An assignment payload (consumer protocol v0).
pub fn encode_assignment(parts: &[(String, Vec<i32>)]) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .map(|(t, p)| {
                TopicPartition::default()
                    .with_topic(TopicName(s(t)))
                    .with_partitions(p.clone())
            })
            .collect(),
    );
    with_version(0, assignment, 0)
}

/// The partitions in an assignment payload (empty payload: nothing assigned).
pub fn decode_assignment(bytes: &Bytes) -> Result<Vec<(String, Vec<i32>)>, TransportError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(bad_payload("assignment", "too short"));
    }
    let version = buf.get_i16().clamp(0, 3);
    check_assignment(&buf).map_err(|e| bad_payload("assignment", e))?;
    let a = ConsumerProtocolAssignment::decode(&mut buf, version)
        .map_err(|e| bad_payload("assignment", e))?;
    Ok(a.assigned_partitions
        .into_iter()
        .map(|tp| (tp.topic.0.to_string(), tp.partitions))
        .collect())
}

/// Bounds check of a consumer-protocol payload before kafka-protocol decodes it: that crate
/// reserves memory for an array from its declared length, so a peer could announce 2^31
/// entries in a few bytes and exhaust memory (found by the `consumer_protocol` fuzz target).
/// This walks the (non-flexible) layout and refuses any array longer than the bytes left.
struct Bounds<'a>(&'a [u8]);

impl Bounds<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A (nullable) string or bytes field with an i16 or i32 length.
    fn sized(&mut self, len: i32) -> Result<(), &'static str> {
        if len >= 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }
    fn string(&mut self) -> Result<(), &'static str> {
        let n = self.i16()?;
        self.sized(n.into())
    }
    fn bytes(&mut self) -> Result<(), &'static str> {
        let n = self.i32()?;
        self.sized(n)
    }
    /// An array whose entries take at least `min_entry` bytes each.
    fn array(
        &mut self,
        min_entry: usize,
        mut entry: impl FnMut(&mut Self) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        let n = self.i32()?;
        if n > 0 && n as usize > self.0.len() / min_entry {
            return Err("array longer than the payload");
        }
        for _ in 0..n.max(0) {
            entry(self)?;
        }
        Ok(())
    }
    fn topic_partitions(&mut self) -> Result<(), &'static str> {
        self.array(6, |b| {
            b.string()?;
            b.array(4, |b| b.i32().map(|_| ()))
        })
    }
}

fn check_subscription(payload: &[u8], version: i16) -> Result<(), &'static str> {
    let mut b = Bounds(payload);
    b.array(2, |b| b.string())?;
    b.bytes()?;
    if version >= 1 {
        b.topic_partitions()?;
    }
    if version >= 2 {
        b.i32()?;
    }
    if version >= 3 {
        b.string()?;
    }
    Ok(())
}

fn check_assignment(payload: &[u8]) -> Result<(), &'static str> {
    let mut b = Bounds(payload);
    b.topic_partitions()?;
    b.bytes()
}

fn bad_payload(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Broker {
        detail: format!("malformed consumer protocol {what}: {e}"),
        retriable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_and_assignment_round_trip() {
        let topics = vec!["ai.anomalies.v1".to_string(), "ai.policy.v1".to_string()];
        assert_eq!(
            decode_subscription(&encode_subscription(&topics)).unwrap(),
            topics
        );
        let parts = vec![("ai.anomalies.v1".to_string(), vec![0, 2])];
        assert_eq!(
            decode_assignment(&encode_assignment(&parts)).unwrap(),
            parts
        );
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
        assert!(decode_subscription(&Bytes::from_static(&[0])).is_err());
    }

    #[test]
    fn a_huge_declared_array_is_refused_without_allocating() {
        // Version 0x4d4d, then a topic count of 0x0a0a.. far beyond the payload.
        let evil = Bytes::from_static(&[0x4d, 0x4d, 0x4d, 0x4d, 0x0a, 0x0a]);
        assert!(decode_subscription(&evil).is_err());
        assert!(decode_assignment(&evil).is_err());
        let evil = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(decode_subscription(&evil).is_err());
        assert!(decode_assignment(&evil).is_err());
    }
}
