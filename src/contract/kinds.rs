//! The per-kind table: everything about a CyberMesh message kind that is data rather than code,
//! in one row per kind. [`Kind`]'s names, topics, variables, signing domains, record-key rule
//! and verification family all read from it; the configuration reads the topic and domain
//! variables it names.

use super::messages::Kind;

/// Which verification path a kind takes (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The AI envelope (SPEC 3a): self-signed, replay-guarded.
    Ai,
    /// Signed by a trusted control key over the canonical encoding (SPEC 3b).
    Control,
    /// Policy acknowledgements: optionally signed in headers (SPEC 3c).
    Ack,
}

/// How a record's Kafka key is chosen (SPEC 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// No key: records are dealt round-robin.
    None,
    /// The block height, 8 bytes big-endian.
    Height,
    /// The policy id's UTF-8 bytes.
    PolicyId,
}

/// One kind's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    /// The kind.
    pub kind: Kind,
    /// Short name (CLI, vectors, the `type` metric label).
    pub name: &'static str,
    /// The protobuf message's full name.
    pub proto_name: &'static str,
    /// The default topic (SPEC 1).
    pub default_topic: &'static str,
    /// The variable overriding the topic.
    pub topic_env: &'static str,
    /// The signing domain prefix (SPEC 3a's fixed ones; SPEC 3b's defaults).
    pub domain: &'static [u8],
    /// The variable overriding a control kind's signing domain (SPEC 3b).
    pub domain_env: Option<&'static str>,
    /// The record key.
    pub key: KeyRule,
    /// The verification path.
    pub family: Family,
}

/// The table, in [`Kind::ALL`] order.
pub static KINDS: [KindSpec; 8] = [
    KindSpec {
        kind: Kind::Anomaly,
        name: "anomaly",
        proto_name: "cybermesh.ai.v1.AnomalyEvent",
        default_topic: "ai.anomalies.v1",
        topic_env: "KAFKA_TOPIC_ANOMALY",
        domain: b"ai.anomaly.v1",
        domain_env: None,
        key: KeyRule::None,
        family: Family::Ai,
    },
    KindSpec {
        kind: Kind::Evidence,
        name: "evidence",
        proto_name: "cybermesh.ai.v1.EvidenceEvent",
        default_topic: "ai.evidence.v1",
        topic_env: "KAFKA_TOPIC_EVIDENCE",
        domain: b"ai.evidence.v1",
        domain_env: None,
        key: KeyRule::None,
        family: Family::Ai,
    },
    KindSpec {
        kind: Kind::Policy,
        name: "policy",
        proto_name: "cybermesh.ai.v1.PolicyEvent",
        default_topic: "ai.policy.v1",
        topic_env: "KAFKA_TOPIC_POLICY",
        domain: b"ai.policy.v1\x00",
        domain_env: None,
        key: KeyRule::None,
        family: Family::Ai,
    },
    KindSpec {
        kind: Kind::Commit,
        name: "commit",
        proto_name: "cybermesh.control.v1.CommitEvent",
        default_topic: "control.commits.v1",
        topic_env: "KAFKA_TOPIC_COMMITS",
        domain: b"control.commits.v1",
        domain_env: Some("CONTROL_SIGNING_DOMAIN"),
        key: KeyRule::Height,
        family: Family::Control,
    },
    KindSpec {
        kind: Kind::PolicyUpdate,
        name: "policy_update",
        proto_name: "cybermesh.control.v1.PolicyUpdateEvent",
        default_topic: "control.policy.v1",
        topic_env: "KAFKA_TOPIC_POLICY_UPDATES",
        domain: b"control.policy.v1",
        domain_env: Some("CONTROL_POLICY_SIGNING_DOMAIN"),
        key: KeyRule::PolicyId,
        family: Family::Control,
    },
    KindSpec {
        kind: Kind::Reputation,
        name: "reputation",
        proto_name: "cybermesh.control.v1.ReputationEvent",
        default_topic: "control.reputation.v1",
        topic_env: "KAFKA_TOPIC_REPUTATION",
        domain: b"control.reputation.v1",
        domain_env: Some("CONTROL_REPUTATION_SIGNING_DOMAIN"),
        key: KeyRule::None,
        family: Family::Control,
    },
    KindSpec {
        kind: Kind::EvidenceRequest,
        name: "evidence_request",
        proto_name: "cybermesh.control.v1.EvidenceRequestEvent",
        default_topic: "control.evidence.v1",
        topic_env: "KAFKA_TOPIC_EVIDENCE_REQUESTS",
        domain: b"control.evidence.v1",
        domain_env: Some("CONTROL_EVIDENCE_SIGNING_DOMAIN"),
        key: KeyRule::None,
        family: Family::Control,
    },
    KindSpec {
        kind: Kind::PolicyAck,
        name: "policy_ack",
        proto_name: "cybermesh.control.v1.PolicyAckEvent",
        default_topic: "control.policy.ack.v1",
        topic_env: "KAFKA_TOPIC_POLICY_ACK",
        domain: b"",
        domain_env: None,
        key: KeyRule::PolicyId,
        family: Family::Ack,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_kind_order_and_its_names_are_unique() {
        for (i, spec) in KINDS.iter().enumerate() {
            assert_eq!(spec.kind, Kind::ALL[i]);
            assert_eq!(spec.kind as usize, i);
        }
        let mut names: Vec<_> = KINDS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for s in &KINDS {
            assert_eq!(
                s.domain_env.is_some(),
                s.family == Family::Control,
                "{}",
                s.name
            );
        }
    }
}
