//! Example messages of every kind with a payload of a chosen size, for `meshbus produce
//! --sample`, the demo, the benchmarks and the tests (which include this file; it is not
//! library API). Unsigned: pass them through a `Signer`.
#![allow(dead_code)]

use meshbus::contract::messages::*;

/// A deterministic lowercase UUIDv4 built from `n`.
pub fn uuid_v4(n: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// A JSON anomaly payload of about `size` bytes whose metadata matches `severity`/`confidence`.
pub fn anomaly_payload(severity: u32, confidence: f64, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"severity":{severity},"confidence":{confidence},"detail":""#);
    let fill = size.saturating_sub(head.len() + 2);
    let mut out = head.into_bytes();
    out.extend(std::iter::repeat_n(b'x', fill));
    out.extend_from_slice(b"\"}");
    out
}

/// An anomaly with an about-`size`-byte payload.
pub fn anomaly(n: u64, size: usize) -> AnomalyEvent {
    let severity = (n % 10) as u32 + 1;
    AnomalyEvent {
        id: uuid_v4(n),
        r#type: "ddos".into(),
        source: "10.0.0.8".into(),
        severity,
        confidence: 0.9,
        payload: anomaly_payload(severity, 0.9, size),
        model_version: "ddos-v1.2.0".into(),
        ..Default::default()
    }
}

/// Evidence with an about-`size`-byte proof.
pub fn evidence(n: u64, size: usize) -> EvidenceEvent {
    EvidenceEvent {
        id: uuid_v4(n),
        evidence_type: "pcap".into(),
        refs: vec![meshbus::contract::signing::sha256(&n.to_be_bytes()).to_vec()],
        proof_blob: vec![0xab; size],
        ..Default::default()
    }
}

/// A policy proposal with about-`size`-byte JSON params.
pub fn policy(n: u64, size: usize) -> PolicyEvent {
    PolicyEvent {
        id: uuid_v4(n),
        action: "block".into(),
        rule: "ip_deny".into(),
        params: json_blob(size),
        ..Default::default()
    }
}

/// A commit whose anomaly ids fill about `size` bytes.
pub fn commit(height: i64, size: usize) -> CommitEvent {
    let ids: Vec<String> = (0..(size / 38).max(1) as u64).map(uuid_v4).collect();
    let n = ids.len() as u32;
    CommitEvent {
        height,
        block_hash: meshbus::contract::signing::sha256(&height.to_be_bytes()).to_vec(),
        state_root: meshbus::contract::signing::sha256(b"state").to_vec(),
        tx_count: n + 2,
        anomaly_count: n,
        evidence_count: 1,
        policy_count: 1,
        anomaly_ids: ids,
        ..Default::default()
    }
}

/// A policy update with about-`size`-byte rule data (rule_hash filled by the signer).
pub fn policy_update(n: u64, size: usize) -> PolicyUpdateEvent {
    PolicyUpdateEvent {
        policy_id: format!("policy-{n}"),
        action: "add".into(),
        rule_type: "ip_deny".into(),
        rule_data: json_blob(size),
        requires_ack: true,
        effective_height: n as i64,
        ..Default::default()
    }
}

/// A reputation event with about-`size`-byte analyst notes.
pub fn reputation(n: u64, size: usize) -> ReputationEvent {
    ReputationEvent {
        ai_message_id: uuid_v4(n),
        ai_producer_id: vec![7; 32],
        message_type: "anomaly".into(),
        score: 10,
        reason: "confirmed".into(),
        confirmed: true,
        analyst_notes: "n".repeat(size),
        block_height: n as i64,
        ..Default::default()
    }
}

/// An evidence request with about-`size`-byte challenge data.
pub fn evidence_request(n: u64, size: usize) -> EvidenceRequestEvent {
    EvidenceRequestEvent {
        request_id: format!("req-{n}"),
        anomaly_id: uuid_v4(n),
        request_type: "more_evidence".into(),
        requested_types: vec!["pcap".into()],
        evidence_quality_score: 5,
        challenge_data: vec![1; size],
        block_height: n as i64,
        ..Default::default()
    }
}

fn json_blob(size: usize) -> Vec<u8> {
    let mut out = br#"{"cidr":"10.0.0.0/8","pad":""#.to_vec();
    out.extend(std::iter::repeat_n(
        b'p',
        size.saturating_sub(out.len() + 2),
    ));
    out.extend_from_slice(b"\"}");
    out
}
