//! Property tests: sign-then-verify round trips for every kind, and single-byte tampering.

use meshbus::contract::*;
use proptest::prelude::*;
use prost::Message as _;
use std::sync::Arc;

const NOW: i64 = 1_790_000_000;

fn signer(seed: u8) -> Signer {
    Signer::with_clock(
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
        7,
        Default::default(),
        Arc::new(FixedClock::at_secs(NOW)),
    )
}

fn verifier(trusted: [u8; 32]) -> Verifier {
    Verifier::with_clock(
        VerifierConfig::default(),
        TrustStore::from_keys([trusted]),
        Arc::new(FixedClock::at_secs(NOW)),
    )
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 ._:/é-]{{1,{max}}}"))
        .unwrap()
        .prop_filter("byte length", move |s| !s.is_empty() && s.len() <= max)
}

fn uuid_v4() -> impl Strategy<Value = String> {
    any::<[u8; 16]>().prop_map(|b| uuid::Builder::from_random_bytes(b).into_uuid().to_string())
}

prop_compose! {
    fn anomaly()(id in text(128), ty in text(40), source in text(40), severity in 1u32..=10,
                 confidence in 0.0f64..=1.0, extra in text(200), mv in text(20)) -> AnomalyEvent {
        let payload = serde_json::json!({"severity": severity, "confidence": confidence, "extra": extra});
        AnomalyEvent { id, r#type: ty, source, severity, confidence,
            payload: serde_json::to_vec(&payload).unwrap().into(), model_version: mv, ..Default::default() }
    }
}

prop_compose! {
    fn evidence()(id in text(128), et in text(40), refs in prop::collection::vec(any::<[u8; 32]>(), 0..4),
                  proof in prop::collection::vec(any::<u8>(), 0..300),
                  coc in prop::collection::vec((any::<[u8; 32]>(), any::<[u8; 32]>(), any::<i64>()), 0..3)) -> EvidenceEvent {
        EvidenceEvent { id, evidence_type: et, refs: refs.into_iter().map(|r| r.to_vec().into()).collect(),
            proof_blob: proof.into(),
            coc: coc.into_iter().map(|(r, a, ts)| ChainOfCustodyEntry { ref_hash: r.to_vec().into(), actor_id: a.to_vec().into(), ts, signature: vec![9; 64].into() }).collect(),
            ..Default::default() }
    }
}

prop_compose! {
    fn policy()(id in text(128), action in text(30), rule in text(60),
                params in prop::collection::vec(any::<u8>(), 0..200)) -> PolicyEvent {
        PolicyEvent { id, action, rule, params: params.into(), ..Default::default() }
    }
}

prop_compose! {
    fn commit()(height in 0i64..i64::MAX, bh in any::<[u8; 32]>(), sr in any::<[u8; 32]>(),
                ids in prop::collection::vec(uuid_v4(), 0..5), a in 0u32..100, e in 0u32..100,
                p in 0u32..100, extra in 0u32..1000, ts in -60i64..=60) -> CommitEvent {
        CommitEvent { height, block_hash: bh.to_vec().into(), state_root: sr.to_vec().into(), tx_count: a + e + p + extra,
            anomaly_count: a, evidence_count: e, policy_count: p, anomaly_ids: ids, timestamp: NOW + ts,
            ..Default::default() }
    }
}

prop_compose! {
    fn policy_update()(pid in text(128), action in text(30), rt in text(30),
                       data in prop::collection::vec(any::<u8>(), 1..300), ack in any::<bool>(),
                       rb in proptest::option::of(text(40)), eff in 0i64..1_000_000, span in 0i64..1000) -> PolicyUpdateEvent {
        PolicyUpdateEvent { policy_id: pid, action, rule_type: rt, rule_data: data.into(), requires_ack: ack,
            rollback_policy_id: rb.unwrap_or_default(), effective_height: eff,
            expiration_height: if span == 0 { 0 } else { eff + span }, ..Default::default() }
    }
}

prop_compose! {
    fn reputation()(mid in text(64), ap in any::<[u8; 32]>(), mt in text(20), score in -100i32..=100,
                    reason in text(60), c in any::<bool>(), fp in any::<bool>(), sev in 0u32..11, bh in 0i64..1000) -> ReputationEvent {
        ReputationEvent { ai_message_id: mid, ai_producer_id: ap.to_vec().into(), message_type: mt, score, reason,
            confirmed: c, false_positive: fp, incident_severity: sev, block_height: bh, ..Default::default() }
    }
}

prop_compose! {
    fn evidence_request()(rid in text(128), aid in text(64), types in prop::collection::vec(text(20), 0..4),
                          q in 0u32..=10, data in prop::collection::vec(any::<u8>(), 0..100), dl in any::<i64>()) -> EvidenceRequestEvent {
        EvidenceRequestEvent { request_id: rid, anomaly_id: aid, requested_types: types,
            evidence_quality_score: q, challenge_data: data.into(), deadline_ts: dl, ..Default::default() }
    }
}

/// Verifies a freshly signed AI record, then every single-byte change to it: each is refused,
/// or verifies to a message whose signed envelope is unchanged (SPEC 3a signs only the envelope).
fn ai_round_trip<M: AiEnvelope + std::fmt::Debug + PartialEq>(
    m: M,
    pos: prop::sample::Index,
    xor: u8,
) -> Result<(), TestCaseError> {
    let s = signer(1);
    let signed = s.sign_ai(m);
    let bytes = signed.encode_to_vec();
    let got = verifier([0; 32]).verify_ai_kind::<M>(&bytes);
    prop_assert_eq!(got.as_ref(), Ok(&signed));
    let mut tampered = bytes.clone();
    let i = pos.index(tampered.len());
    tampered[i] ^= xor;
    if let Ok(t) = verifier([0; 32]).verify_ai_kind::<M>(&tampered) {
        prop_assert_eq!(t.ts(), signed.ts());
        prop_assert_eq!(t.content(), signed.content());
        prop_assert_eq!(t.content_hash(), signed.content_hash());
        prop_assert_eq!(t.producer_id(), signed.producer_id());
        prop_assert_eq!(t.nonce(), signed.nonce());
        prop_assert_eq!(t.pubkey(), signed.pubkey());
        prop_assert_eq!(t.signature(), signed.signature());
        prop_assert_eq!(t.alg(), signed.alg());
    }
    Ok(())
}

/// Control messages sign the whole body: any single-byte change is refused or decodes to the
/// same message.
fn control_round_trip<M: ControlSigned + std::fmt::Debug + PartialEq>(
    m: M,
    pos: prop::sample::Index,
    xor: u8,
) -> Result<(), TestCaseError> {
    let s = signer(2);
    let signed = s.sign_control(m);
    let bytes = signed.encode_to_vec();
    let v = verifier(s.public_key());
    let got = v.verify_control_kind::<M>(&bytes);
    prop_assert_eq!(got.as_ref(), Ok(&signed));
    let mut tampered = bytes.clone();
    let i = pos.index(tampered.len());
    tampered[i] ^= xor;
    if let Ok(t) = v.verify_control_kind::<M>(&tampered) {
        prop_assert_eq!(t, signed);
    }
    // An untrusted signer is refused.
    let other = verifier([0; 32]).verify_control_kind::<M>(&bytes);
    prop_assert_eq!(other.unwrap_err().reason, Reason::UntrustedKey);
    Ok(())
}

trait VerifyKind {
    fn verify_ai_kind<M: AiEnvelope>(&self, b: &[u8]) -> Result<M, VerifyError>;
    fn verify_control_kind<M: ControlSigned>(&self, b: &[u8]) -> Result<M, VerifyError>;
}

impl VerifyKind for Verifier {
    fn verify_ai_kind<M: AiEnvelope>(&self, b: &[u8]) -> Result<M, VerifyError> {
        let msg = self.verify(M::KIND, b)?;
        Ok(M::decode(msg.encode().as_slice()).unwrap())
    }
    fn verify_control_kind<M: ControlSigned>(&self, b: &[u8]) -> Result<M, VerifyError> {
        let msg = self.verify(M::KIND, b)?;
        Ok(M::decode(msg.encode().as_slice()).unwrap())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn anomaly_round_trip(m in anomaly(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        ai_round_trip(m, pos, xor)?;
    }
    #[test]
    fn evidence_round_trip(m in evidence(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        ai_round_trip(m, pos, xor)?;
    }
    #[test]
    fn policy_round_trip(m in policy(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        ai_round_trip(m, pos, xor)?;
    }
    #[test]
    fn commit_round_trip(m in commit(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        control_round_trip(m, pos, xor)?;
    }
    #[test]
    fn policy_update_round_trip(m in policy_update(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        control_round_trip(m, pos, xor)?;
    }
    #[test]
    fn reputation_round_trip(m in reputation(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        control_round_trip(m, pos, xor)?;
    }
    #[test]
    fn evidence_request_round_trip(m in evidence_request(), pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        control_round_trip(m, pos, xor)?;
    }

    /// Control encoding is canonical: decode then re-encode is the identity on signed output,
    /// and field numbers on the wire ascend.
    #[test]
    fn commit_encoding_is_canonical(m in commit()) {
        let signed = signer(2).sign_control(m);
        let bytes = signed.encode_to_vec();
        let again = CommitEvent::decode(bytes.as_slice()).unwrap().encode_to_vec();
        prop_assert_eq!(&again, &bytes);
        let mut last = 0u64;
        let mut buf = bytes.as_slice();
        while !buf.is_empty() {
            let key = prost::encoding::decode_varint(&mut buf).unwrap();
            let (field, wt) = (key >> 3, key & 7);
            prop_assert!(field >= last, "field {} after {}", field, last);
            last = field;
            match wt {
                0 => { prost::encoding::decode_varint(&mut buf).unwrap(); }
                2 => { let n = prost::encoding::decode_varint(&mut buf).unwrap() as usize; buf = &buf[n..]; }
                1 => buf = &buf[8..],
                5 => buf = &buf[4..],
                _ => prop_assert!(false, "wire type {}", wt),
            }
        }
    }
}

#[test]
fn policy_allowlist_and_policy_ack_signature() {
    use std::collections::{BTreeMap, HashSet};
    let s = signer(1);
    let p = s.sign_ai(PolicyEvent {
        id: "p1".into(),
        action: "block".into(),
        rule: "ip".into(),
        params: b"{}".to_vec().into(),
        ..Default::default()
    });
    let cfg = {
        let mut vc = VerifierConfig::default();
        vc.policy_allowlist = Some(HashSet::from([[7u8; 32]]));
        vc
    };
    let v = Verifier::with_clock(
        cfg.clone(),
        TrustStore::default(),
        Arc::new(FixedClock::at_secs(NOW)),
    );
    assert_eq!(
        v.verify(Kind::Policy, p.encode_to_vec())
            .unwrap_err()
            .reason,
        Reason::UntrustedKey
    );
    let cfg = {
        let mut vc = VerifierConfig::default();
        vc.policy_allowlist = Some(HashSet::from([s.public_key()]));
        vc
    };
    let v = Verifier::with_clock(
        cfg,
        TrustStore::default(),
        Arc::new(FixedClock::at_secs(NOW)),
    );
    assert!(v.verify(Kind::Policy, p.encode_to_vec()).is_ok());

    let ack = PolicyAckEvent {
        policy_id: "p1".into(),
        result: "applied".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let cfg = {
        let mut vc = VerifierConfig::default();
        vc.ack_keys = Some(TrustStore::from_keys([s.public_key()]));
        vc
    };
    let v = Verifier::with_clock(
        cfg,
        TrustStore::default(),
        Arc::new(FixedClock::at_secs(NOW)),
    );
    let mut headers = BTreeMap::new();
    assert_eq!(
        v.verify_record(Kind::PolicyAck, &ack, &headers)
            .unwrap_err()
            .reason,
        Reason::BadSignature
    );
    headers.insert("ack-signature".to_string(), s.sign_raw(&ack).to_vec());
    headers.insert("ack-signature-alg".to_string(), b"ed25519".to_vec());
    assert!(v.verify_record(Kind::PolicyAck, &ack, &headers).is_ok());
    headers.insert(
        "ack-signature".to_string(),
        signer(3).sign_raw(&ack).to_vec(),
    );
    assert_eq!(
        v.verify_record(Kind::PolicyAck, &ack, &headers)
            .unwrap_err()
            .reason,
        Reason::BadSignature
    );
}
