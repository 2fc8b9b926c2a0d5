//! The proto3 JSON mapping of the CyberMesh messages (as protobuf's own JSON printers and
//! parsers do it: camelCase or original field names accepted, bytes as base64, 64-bit integers
//! as strings), through prost-reflect and the descriptor set compiled from `proto/`.

use super::messages::{Kind, Message};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use std::sync::OnceLock;

static POOL: OnceLock<DescriptorPool> = OnceLock::new();

fn descriptor(kind: Kind) -> MessageDescriptor {
    let pool = POOL.get_or_init(|| {
        DescriptorPool::decode(
            &include_bytes!(concat!(env!("OUT_DIR"), "/cybermesh_descriptor.bin"))[..],
        )
        .expect("descriptor set built from proto/")
    });
    pool.get_message_by_name(kind.proto_name())
        .expect("every kind is in the descriptor set")
}

/// Why JSON could not become a message.
#[derive(Debug, thiserror::Error)]
#[error("{kind} JSON: {detail}")]
#[non_exhaustive]
pub struct JsonError {
    /// The kind expected.
    pub kind: &'static str,
    /// What is wrong.
    pub detail: String,
}

/// Parses `json` as a message of `kind` (unknown fields are an error).
pub fn from_json(kind: Kind, json: &str) -> Result<Message, JsonError> {
    let err = |detail: String| JsonError {
        kind: kind.name(),
        detail,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic =
        DynamicMessage::deserialize(descriptor(kind), &mut de).map_err(|e| err(e.to_string()))?;
    de.end().map_err(|e| err(e.to_string()))?;
    Message::decode(kind, dynamic.encode_to_vec()).map_err(|e| err(e.to_string()))
}

/// The proto3 JSON of `message`, with original (snake_case) field names and defaults omitted.
pub fn to_json(message: &Message) -> serde_json::Value {
    let kind = message.kind();
    let dynamic = DynamicMessage::decode(descriptor(kind), message.encode().as_slice())
        .expect("a message meshbus encoded decodes against its own schema");
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serialising to a JSON value cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::sample;

    #[test]
    fn every_kind_round_trips_through_json() {
        let messages = [
            Message::Anomaly(sample::anomaly(1, 64)),
            Message::Evidence(sample::evidence(2, 64)),
            Message::Policy(sample::policy(3, 64)),
            Message::Commit(sample::commit(4, 64)),
            Message::PolicyUpdate(sample::policy_update(5, 64)),
            Message::Reputation(sample::reputation(6, 64)),
            Message::EvidenceRequest(sample::evidence_request(7, 64)),
        ];
        for m in messages {
            let json = to_json(&m).to_string();
            assert_eq!(from_json(m.kind(), &json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused() {
        assert!(from_json(Kind::Anomaly, r#"{"nope": 1}"#).is_err());
        assert!(from_json(Kind::Anomaly, r#"{"severity": "high"}"#).is_err());
        assert!(from_json(Kind::Anomaly, r#"{"severity": 3} trailing"#).is_err());
        let m = from_json(Kind::Anomaly, r#"{"type": "ddos", "severity": 3}"#).unwrap();
        assert!(matches!(m, Message::Anomaly(a) if a.severity == 3 && a.r#type == "ddos"));
    }
}
