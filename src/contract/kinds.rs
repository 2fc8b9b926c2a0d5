//! The per-kind table: everything about a CyberMesh message kind in one row per kind, and
//! the table's data ([`Kind`], [`KINDS`]). A row names the kind (`Variant(ProtoType)
//! short_name`) and gives, in this order:
//!
//! - `sample`: an example message of about `size` bytes numbered `n` (expanded only by the
//!   command's sample module, which brings `uuid_v4`, `anomaly_payload`, `json_blob` and
//!   `sha256`; samples are not library API);
//! - `summary`: the one-line view `meshbus consume` prints of a verified message (expanded
//!   only by the command, like `sample`);
//! - `proto`: the protobuf message's full name (the proto3 JSON path reads it);
//! - `topic`: the default topic `or` the variable overriding it (SPEC 1);
//! - `key`: the Kafka record key (SPEC 1);
//! - `structure`: the kind's structural checks (SPEC 4 step 2, `invalid_field`), written in
//!   the field rules of `contract/checks.rs`;
//! - `family`: how it is signed and verified, with what that family needs:
//!   - `ai { domain, content, max, after_signature }` (SPEC 3a; steps 7 and 8 after the
//!     signature),
//!   - `control { domain or VARIABLE, prepare, content_hash }` (SPEC 3b; `prepare` fills
//!     derived fields before signing),
//!   - `ack {}` (SPEC 3c, signed in record headers).
//!
//! Each layer expands its own part of the rows, through `rows_for`: this file the data
//! (`kind_data`), `messages.rs` the [`Message`](super::Message) enum and its accessors
//! (`kind_messages`), `signing.rs` what is signed (`kind_signing`), `verify/` the checks
//! (`kind_checks`). This file imports nothing of the contract, so the layers form no loop.
//! Adding a kind is its proto message, one row here and one fuzz target.

use std::fmt;
use std::str::FromStr;

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

/// One kind's row, as data.
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
    /// The verification path.
    pub family: Family,
}

/// Parses the rows of [`kind_rows!`](crate::kind_rows) once and hands `$section` each row
/// as `[docs] Variant Type short_name "proto" "topic" "TOPIC_VARIABLE" (|m| key)
/// (|m| structure) family { family fields }`: every expansion reads the same parse, and one
/// that needs no part of a row matches it as `($($skip:tt)*)`.
macro_rules! rows_for {
    ($section:ident ; $(
        $(#[$doc:meta])*
        $variant:ident($ty:ident) $snake:ident {
            sample: |$sn:ident, $ss:ident| $sample:block,
            summary: |$summ:ident| $summary:expr,
            proto: $proto:literal,
            topic: $topic:literal or $topic_env:literal,
            key: |$km:ident| $key:expr,
            structure: |$sm:ident| $structure:block,
            family: $family:ident { $($fam:tt)* } $(,)?
        }
    ),* $(,)? ) => {
        $section! { $(
            [$(#[$doc])*] $variant $ty $snake $proto $topic $topic_env
            (|$km| $key) (|$sm| $structure) $family { $($fam)* }
        )* }
    };
}
pub(crate) use rows_for;

/// The table's data: [`Kind`], [`Kind::ALL`] and [`KINDS`].
macro_rules! kind_data {
    ( $(
        [$(#[$doc:meta])*] $variant:ident $ty:ident $snake:ident $proto:literal
        $topic:literal $topic_env:literal ($($key:tt)*) ($($structure:tt)*)
        $family:ident { $($fam:tt)* }
    )* ) => {
        const COUNT: usize = [$(stringify!($variant)),*].len();

        /// Which CyberMesh message a record holds: one variant per row of the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $( $(#[$doc])* $variant, )*
        }

        impl Kind {
            /// Every kind, in table order.
            pub const ALL: [Kind; COUNT] = [$(Kind::$variant),*];
        }

        /// The table's data, one row per kind, in [`Kind::ALL`] order.
        pub static KINDS: [KindSpec; COUNT] = [$(
            KindSpec {
                kind: Kind::$variant,
                name: stringify!($snake),
                proto_name: $proto,
                default_topic: $topic,
                topic_env: $topic_env,
                domain: kind_data!(@domain $family { $($fam)* }),
                domain_env: kind_data!(@domain_env $family { $($fam)* }),
                family: kind_data!(@family $family),
            }
        ),*];
    };

    (@family ai) => { Family::Ai };
    (@family control) => { Family::Control };
    (@family ack) => { Family::Ack };

    (@domain ai { domain: $d:literal, $($rest:tt)* }) => { $d };
    (@domain control { domain: $d:literal or $e:literal, $($rest:tt)* }) => { $d };
    (@domain ack {}) => { b"" };
    (@domain_env ai { $($rest:tt)* }) => { None };
    (@domain_env control { domain: $d:literal or $e:literal, $($rest:tt)* }) => { Some($e) };
    (@domain_env ack {}) => { None };
}

crate::kind_rows!(rows_for; kind_data);

impl Kind {
    /// This kind's row of the per-kind table.
    pub fn spec(self) -> &'static KindSpec {
        &KINDS[self as usize]
    }

    /// The short name used by the CLI, the vectors and the `type` metric label.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The protobuf message's full name.
    pub fn proto_name(self) -> &'static str {
        self.spec().proto_name
    }

    /// The default topic of SPEC.md section 1.
    pub fn default_topic(self) -> &'static str {
        self.spec().default_topic
    }

    /// The environment variable overriding this kind's topic.
    pub fn topic_env(self) -> &'static str {
        self.spec().topic_env
    }

    /// Its verification path.
    pub fn family(self) -> Family {
        self.spec().family
    }

    /// True for the AI-signed envelope kinds (SPEC 3a).
    pub fn is_ai(self) -> bool {
        self.family() == Family::Ai
    }

    /// The kind whose default topic is `topic`, if any.
    pub fn from_default_topic(topic: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.default_topic() == topic)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message kind or topic `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    /// Accepts a kind name (`anomaly`, `policy_update`, also with `-`) or a default topic.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.replace('-', "_");
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .or_else(|| Kind::from_default_topic(s))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// The rows of the per-kind table, handed to the macro `$then` as written (the command's
/// samples), or with `$then; $section` to [`rows_for`], which hands `$section` each row in a
/// compact form (the library's four expansions).
#[doc(hidden)]
#[macro_export]
macro_rules! kind_rows {
    ($then:ident $(; $section:ident)?) => {
        $then! { $($section ;)?
            /// `cybermesh.ai.v1.AnomalyEvent` on `ai.anomalies.v1`.
            Anomaly(AnomalyEvent) anomaly {
                sample: |n, size| {
                    let severity = (n % 10) as u32 + 1;
                    AnomalyEvent {
                        id: uuid_v4(n),
                        r#type: "ddos".into(),
                        source: "10.0.0.8".into(),
                        severity,
                        confidence: 0.9,
                        payload: anomaly_payload(severity, 0.9, size).into(),
                        model_version: "ddos-v1.2.0".into(),
                        ..Default::default()
                    }
                },
                summary: |m| format!("id={} type={} severity={}", m.id, m.r#type, m.severity),
                proto: "cybermesh.ai.v1.AnomalyEvent",
                topic: "ai.anomalies.v1" or "KAFKA_TOPIC_ANOMALY",
                key: |_m| None,
                structure: |m| {
                    check_str("id", &m.id, MAX_ID_BYTES)?;
                    check_str("type", &m.r#type, MAX_STRING_BYTES)?;
                    check_str("source", &m.source, MAX_STRING_BYTES)?;
                    check_str("model_version", &m.model_version, MAX_STRING_BYTES)?;
                    if !(1..=10).contains(&m.severity) {
                        return fail(Reason::InvalidField, format!("severity {} outside 1..10", m.severity));
                    }
                    if !(0.0..=1.0).contains(&m.confidence) {
                        return fail(Reason::InvalidField, format!("confidence {} outside 0..1", m.confidence));
                    }
                    if m.payload.is_empty() {
                        return fail(Reason::InvalidField, "payload is empty");
                    }
                    Ok(())
                },
                family: ai {
                    domain: b"ai.anomaly.v1",
                    content: payload,
                    max: MAX_PAYLOAD_BYTES,
                    after_signature: |m, _v| { check_payload_metadata(&m.payload, m.severity, m.confidence) },
                },
            },
            /// `cybermesh.ai.v1.EvidenceEvent` on `ai.evidence.v1`.
            Evidence(EvidenceEvent) evidence {
                sample: |n, size| {
                    EvidenceEvent {
                        id: uuid_v4(n),
                        evidence_type: "pcap".into(),
                        refs: vec![sha256(&n.to_be_bytes()).to_vec().into()],
                        proof_blob: vec![0xab; size].into(),
                        ..Default::default()
                    }
                },
                summary: |m| format!("id={} type={}", m.id, m.evidence_type),
                proto: "cybermesh.ai.v1.EvidenceEvent",
                topic: "ai.evidence.v1" or "KAFKA_TOPIC_EVIDENCE",
                key: |_m| None,
                structure: |m| {
                    check_str("id", &m.id, MAX_ID_BYTES)?;
                    check_str("evidence_type", &m.evidence_type, MAX_STRING_BYTES)?;
                    if m.refs.len() > MAX_REFS {
                        return fail(Reason::InvalidField, format!("{} refs, over {MAX_REFS}", m.refs.len()));
                    }
                    for r in &m.refs {
                        check_len("ref", r, 32)?;
                    }
                    if m.coc.len() > MAX_COC {
                        return fail(Reason::InvalidField, format!("{} chain-of-custody entries, over {MAX_COC}", m.coc.len()));
                    }
                    for c in &m.coc {
                        check_len("coc.ref_hash", &c.ref_hash, 32)?;
                        check_len("coc.actor_id", &c.actor_id, 32)?;
                        check_len("coc.signature", &c.signature, 64)?;
                    }
                    Ok(())
                },
                family: ai {
                    domain: b"ai.evidence.v1",
                    content: proof_blob,
                    max: MAX_PROOF_BYTES,
                    after_signature: |_m, _v| { Ok(()) },
                },
            },
            /// `cybermesh.ai.v1.PolicyEvent` on `ai.policy.v1`.
            Policy(PolicyEvent) policy {
                sample: |n, size| {
                    PolicyEvent {
                        id: uuid_v4(n),
                        action: "block".into(),
                        rule: "ip_deny".into(),
                        params: json_blob(size).into(),
                        ..Default::default()
                    }
                },
                summary: |m| format!("id={} action={}", m.id, m.action),
                proto: "cybermesh.ai.v1.PolicyEvent",
                topic: "ai.policy.v1" or "KAFKA_TOPIC_POLICY",
                key: |_m| None,
                structure: |m| {
                    check_str("id", &m.id, MAX_ID_BYTES)?;
                    check_str("action", &m.action, MAX_STRING_BYTES)?;
                    check_str("rule", &m.rule, MAX_STRING_BYTES)
                },
                family: ai {
                    domain: b"ai.policy.v1\x00",
                    content: params,
                    max: MAX_PAYLOAD_BYTES,
                    after_signature: |m, v| { v.check_policy_allowlist(&m.pubkey) },
                },
            },
            /// `cybermesh.control.v1.CommitEvent` on `control.commits.v1`.
            Commit(CommitEvent) commit {
                sample: |n, size| {
                    let height = n as i64;
                    let ids: Vec<String> = (0..(size / 38).max(1) as u64).map(uuid_v4).collect();
                    let count = ids.len() as u32;
                    CommitEvent {
                        height,
                        block_hash: sha256(&height.to_be_bytes()).to_vec().into(),
                        state_root: sha256(b"state").to_vec().into(),
                        tx_count: count + 2,
                        anomaly_count: count,
                        evidence_count: 1,
                        policy_count: 1,
                        anomaly_ids: ids,
                        ..Default::default()
                    }
                },
                summary: |m| format!("height={}", m.height),
                proto: "cybermesh.control.v1.CommitEvent",
                topic: "control.commits.v1" or "KAFKA_TOPIC_COMMITS",
                key: |m| Some(m.height.to_be_bytes().to_vec()),
                structure: |m| {
                    if m.height < 0 {
                        return fail(Reason::InvalidField, format!("height {} < 0", m.height));
                    }
                    check_len("block_hash", &m.block_hash, 32)?;
                    check_len("state_root", &m.state_root, 32)?;
                    if m.anomaly_ids.len() > MAX_ANOMALY_IDS {
                        return fail(Reason::InvalidField, format!("{} anomaly_ids, over {MAX_ANOMALY_IDS}", m.anomaly_ids.len()));
                    }
                    if let Some(bad) = m.anomaly_ids.iter().find(|id| !is_canonical_uuid_v4(id)) {
                        return fail(Reason::InvalidField, format!("anomaly id {:?} is not a lowercase UUIDv4", truncate(bad)));
                    }
                    let counts = u64::from(m.anomaly_count) + u64::from(m.evidence_count) + u64::from(m.policy_count);
                    if counts > u64::from(m.tx_count) {
                        return fail(Reason::InvalidField, format!("counts sum {counts} exceeds tx_count {}", m.tx_count));
                    }
                    Ok(())
                },
                family: control {
                    domain: b"control.commits.v1" or "CONTROL_SIGNING_DOMAIN",
                    prepare: |_m| {},
                    content_hash: |_m| { Ok(()) },
                },
            },
            /// `cybermesh.control.v1.PolicyUpdateEvent` on `control.policy.v1`.
            PolicyUpdate(PolicyUpdateEvent) policy_update {
                sample: |n, size| {
                    PolicyUpdateEvent {
                        policy_id: format!("policy-{n}"),
                        action: "add".into(),
                        rule_type: "ip_deny".into(),
                        rule_data: json_blob(size).into(),
                        requires_ack: true,
                        effective_height: n as i64,
                        ..Default::default()
                    }
                },
                summary: |m| format!("policy_id={}", m.policy_id),
                proto: "cybermesh.control.v1.PolicyUpdateEvent",
                topic: "control.policy.v1" or "KAFKA_TOPIC_POLICY_UPDATES",
                key: |m| Some(m.policy_id.as_bytes().to_vec()),
                structure: |m| {
                    check_str("policy_id", &m.policy_id, MAX_ID_BYTES)?;
                    check_str("action", &m.action, MAX_STRING_BYTES)?;
                    check_str("rule_type", &m.rule_type, MAX_STRING_BYTES)?;
                    if m.rule_data.is_empty() || m.rule_data.len() > MAX_PAYLOAD_BYTES {
                        return fail(Reason::InvalidField, format!("rule_data must be 1..{MAX_PAYLOAD_BYTES} bytes, got {}", m.rule_data.len()));
                    }
                    check_len("rule_hash", &m.rule_hash, 32)?;
                    if m.effective_height < 0 || m.expiration_height < 0 {
                        return fail(Reason::InvalidField, "negative effective or expiration height");
                    }
                    if m.expiration_height != 0 && m.expiration_height <= m.effective_height {
                        return fail(Reason::InvalidField, format!(
                            "expiration_height {} not after effective_height {}",
                            m.expiration_height, m.effective_height
                        ));
                    }
                    Ok(())
                },
                family: control {
                    domain: b"control.policy.v1" or "CONTROL_POLICY_SIGNING_DOMAIN",
                    prepare: |m| {
                        if m.rule_hash.is_empty() {
                            m.rule_hash = sha256(&m.rule_data).to_vec().into();
                        }
                    },
                    content_hash: |m| {
                        if sha256(&m.rule_data).as_slice() != &m.rule_hash[..] {
                            return fail(Reason::ContentHashMismatch, "rule_hash differs from SHA-256(rule_data)");
                        }
                        Ok(())
                    },
                },
            },
            /// `cybermesh.control.v1.ReputationEvent` on `control.reputation.v1`.
            Reputation(ReputationEvent) reputation {
                sample: |n, size| {
                    ReputationEvent {
                        ai_message_id: uuid_v4(n),
                        ai_producer_id: vec![7; 32].into(),
                        message_type: "anomaly".into(),
                        score: 10,
                        reason: "confirmed".into(),
                        confirmed: true,
                        analyst_notes: "n".repeat(size),
                        block_height: n as i64,
                        ..Default::default()
                    }
                },
                summary: |m| format!("message={} score={}", m.ai_message_id, m.score),
                proto: "cybermesh.control.v1.ReputationEvent",
                topic: "control.reputation.v1" or "KAFKA_TOPIC_REPUTATION",
                key: |_m| None,
                structure: |m| {
                    check_len("ai_producer_id", &m.ai_producer_id, 32)?;
                    if !(-100..=100).contains(&m.score) {
                        return fail(Reason::InvalidField, format!("score {} outside -100..100", m.score));
                    }
                    Ok(())
                },
                family: control {
                    domain: b"control.reputation.v1" or "CONTROL_REPUTATION_SIGNING_DOMAIN",
                    prepare: |_m| {},
                    content_hash: |_m| { Ok(()) },
                },
            },
            /// `cybermesh.control.v1.EvidenceRequestEvent` on `control.evidence.v1`.
            EvidenceRequest(EvidenceRequestEvent) evidence_request {
                sample: |n, size| {
                    EvidenceRequestEvent {
                        request_id: format!("req-{n}"),
                        anomaly_id: uuid_v4(n),
                        request_type: "more_evidence".into(),
                        requested_types: vec!["pcap".into()],
                        evidence_quality_score: 5,
                        challenge_data: vec![1; size].into(),
                        block_height: n as i64,
                        ..Default::default()
                    }
                },
                summary: |m| format!("id={}", m.request_id),
                proto: "cybermesh.control.v1.EvidenceRequestEvent",
                topic: "control.evidence.v1" or "KAFKA_TOPIC_EVIDENCE_REQUESTS",
                key: |_m| None,
                structure: |m| {
                    check_str("request_id", &m.request_id, MAX_ID_BYTES)?;
                    if m.evidence_quality_score > 10 {
                        return fail(Reason::InvalidField, format!("evidence_quality_score {} over 10", m.evidence_quality_score));
                    }
                    Ok(())
                },
                family: control {
                    domain: b"control.evidence.v1" or "CONTROL_EVIDENCE_SIGNING_DOMAIN",
                    prepare: |_m| {},
                    content_hash: |_m| { Ok(()) },
                },
            },
            /// `cybermesh.control.v1.PolicyAckEvent` on `control.policy.ack.v1`.
            PolicyAck(PolicyAckEvent) policy_ack {
                sample: |n, _size| {
                    PolicyAckEvent {
                        policy_id: format!("policy-{n}"),
                        result: "applied".into(),
                        acked_at: 1,
                        ..Default::default()
                    }
                },
                summary: |m| format!("policy_id={} result={}", m.policy_id, m.result),
                proto: "cybermesh.control.v1.PolicyAckEvent",
                topic: "control.policy.ack.v1" or "KAFKA_TOPIC_POLICY_ACK",
                key: |m| Some(m.policy_id.as_bytes().to_vec()),
                structure: |_m| { Ok::<(), VerifyError>(()) },
                family: ack {},
            },
        }
    };
}

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
