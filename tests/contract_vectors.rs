//! Every vector and sequence of `../shared/vectors/contract_vectors.json` must pass.

mod common;
use common::vectors::{self, Vectors};
use meshbus::contract::control_sign_bytes;
use meshbus::contract::*;
use std::sync::Arc;

fn verifier(v: &Vectors) -> Verifier {
    let trust = TrustStore::from_keys(
        v.trusted_control_keys
            .iter()
            .map(|k| meshbus::contract::keys::decode_hex32(k).unwrap()),
    );
    Verifier::with_clock(
        VerifierConfig::default(),
        trust,
        Arc::new(FixedClock::at_secs(v.now)),
    )
}

fn outcome(r: Result<Message, VerifyError>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.reason.code().to_string(),
    }
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    let v = vectors::load();
    assert!(
        v.vectors.len() >= 60,
        "vector file shrank: {}",
        v.vectors.len()
    );
    let mut failures = Vec::new();
    for vec in &v.vectors {
        let kind: Kind = vec.kind.parse().unwrap();
        assert_eq!(kind.default_topic(), vec.topic, "{}", vec.name);
        let record = hex::decode(&vec.record_hex).unwrap();
        let got = outcome(verifier(&v).verify(kind, &record));
        if got != vec.expect {
            failures.push(format!(
                "{}: expected {}, got {}",
                vec.name, vec.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_sequence_through_one_verifier() {
    let v = vectors::load();
    assert!(!v.sequences.is_empty());
    for seq in &v.sequences {
        let kind: Kind = seq.kind.parse().unwrap();
        let ver = verifier(&v);
        let got: Vec<String> = seq
            .records_hex
            .iter()
            .map(|r| outcome(ver.verify(kind, hex::decode(r).unwrap())))
            .collect();
        assert_eq!(got, seq.expect, "sequence {}", seq.name);
    }
}

/// Every valid vector re-signs to its decoded message's canonical encoding (the same signature
/// as the record's), and its sign bytes equal `sign_bytes_hex` where the vector gives them. A
/// record that is canonical itself is reproduced byte for byte; one that is not differs from
/// its canonical encoding only by whole fields that the decoder skips (unknown fields, known
/// ones under the wrong wire type): no vector is named.
#[test]
fn sign_bytes_and_resigning_reproduce_valid_vectors() {
    let v = vectors::load();
    let clock = Arc::new(FixedClock::at_secs(v.now));
    let ai = Signer::with_clock(
        vectors::seed(&v.keys.ai_producer_seed_hex),
        0,
        SigningDomains::default(),
        clock.clone(),
    );
    let ctl = Signer::with_clock(
        vectors::seed(&v.keys.control_signer_seed_hex),
        0,
        SigningDomains::default(),
        clock,
    );
    assert_eq!(hex::encode(ai.public_key()), v.keys.ai_producer_pubkey_hex);
    assert_eq!(
        hex::encode(ctl.public_key()),
        v.keys.control_signer_pubkey_hex
    );
    let (mut with_sign_bytes, mut byte_for_byte, mut with_skipped) = (0, 0, 0);
    for vec in v.vectors.iter().filter(|x| x.expect == "ok") {
        let record = hex::decode(&vec.record_hex).unwrap();
        let kind: Kind = vec.kind.parse().unwrap();
        // One path for every kind: the table's sign bytes and the signer's dispatch.
        let m = Message::decode(kind, &record).unwrap();
        let canonical = m.encode();
        if let Some(want) = &vec.sign_bytes_hex {
            let sign_bytes = m.sign_bytes(&SigningDomains::default()).unwrap();
            assert_eq!(
                hex::encode(&sign_bytes),
                *want,
                "sign bytes of {}",
                vec.name
            );
            with_sign_bytes += 1;
        }
        let signer = if kind.is_ai() { &ai } else { &ctl };
        let resigned = signer.resign_message(m.clone()).encode();
        assert_eq!(
            hex::encode(&resigned),
            hex::encode(&canonical),
            "re-signed {}",
            vec.name
        );
        if canonical == record {
            assert_eq!(resigned, record, "re-signed {}", vec.name);
            byte_for_byte += 1;
        } else {
            let skipped = removed_fields(&record, &canonical).unwrap_or_else(|| {
                panic!(
                    "{}: the canonical encoding is not the record less some fields",
                    vec.name
                )
            });
            assert_eq!(
                Message::decode(kind, &skipped).unwrap(),
                Message::decode(kind, &[]).unwrap(),
                "{}: a field left out by re-encoding carried data",
                vec.name
            );
            with_skipped += 1;
        }
    }
    assert!(
        with_sign_bytes >= 10,
        "only {with_sign_bytes} vectors carried sign bytes"
    );
    assert!(
        byte_for_byte >= 10,
        "only {byte_for_byte} records were canonical"
    );
    assert!(
        with_skipped >= 2,
        "only {with_skipped} records carried skipped fields"
    );
}

/// The top-level fields of `record`, each as its bytes (tag and value).
fn fields(record: &[u8]) -> Vec<&[u8]> {
    let varint_len = |b: &[u8]| b.iter().position(|&x| x < 0x80).unwrap() + 1;
    let mut out = Vec::new();
    let mut rest = record;
    while !rest.is_empty() {
        let mut buf = rest;
        let key = prost::encoding::decode_varint(&mut buf).unwrap();
        let tag = rest.len() - buf.len();
        let value = match key & 7 {
            0 => varint_len(buf),
            1 => 8,
            2 => varint_len(buf) + prost::encoding::decode_varint(&mut buf).unwrap() as usize,
            5 => 4,
            wire_type => panic!("wire type {wire_type} in a vector"),
        };
        let len = tag + value;
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// When `canonical` is `record` with some whole top-level fields left out, those fields.
fn removed_fields(record: &[u8], canonical: &[u8]) -> Option<Vec<u8>> {
    let mut kept = fields(canonical).into_iter().peekable();
    let mut removed = Vec::new();
    for field in fields(record) {
        if kept.peek() == Some(&field) {
            kept.next();
        } else {
            removed.extend_from_slice(field);
        }
    }
    kept.peek().is_none().then_some(removed)
}

/// SPEC 3b: signing domains are configuration. Deployed CyberMesh services sign policy
/// updates with `control.policy.v2`: with that setting meshbus signs and verifies them, the
/// sign bytes differ from the default ones only in the domain, and a v2 record fails as
/// `bad_signature` under the default (and a default one under v2).
#[test]
fn policy_updates_signed_under_control_policy_v2_interoperate_when_configured() {
    use meshbus::contract::control_sign_bytes_in;
    use prost::Message as _;
    let v = vectors::load();
    let seed = vectors::seed(&v.keys.control_signer_seed_hex);
    let mut v2 = SigningDomains::default();
    v2.set(Kind::PolicyUpdate, "control.policy.v2");
    let clock = || Arc::new(FixedClock::at_secs(v.now));
    let signer = Signer::with_clock(seed.clone(), 0, v2.clone(), clock());
    let m = signer.sign_control(common::sample::policy_update(1, 100));
    let record = m.encode_to_vec();

    // The sign bytes: same canonical body, only the domain differs.
    let default_bytes = control_sign_bytes(&m);
    let v2_bytes = control_sign_bytes_in(&m, b"control.policy.v2");
    assert_eq!(&default_bytes[..17], b"control.policy.v1");
    assert_eq!(&v2_bytes[..17], b"control.policy.v2");
    assert_eq!(default_bytes[17..], v2_bytes[17..]);

    let trust = || {
        TrustStore::from_keys(
            v.trusted_control_keys
                .iter()
                .map(|k| meshbus::contract::keys::decode_hex32(k).unwrap()),
        )
    };
    let under = |domains: SigningDomains| {
        Verifier::with_clock(
            {
                let mut vc = VerifierConfig::default();
                vc.domains = domains;
                vc
            },
            trust(),
            clock(),
        )
    };
    assert_eq!(
        outcome(under(v2.clone()).verify(Kind::PolicyUpdate, &record)),
        "ok"
    );
    assert_eq!(
        outcome(under(SigningDomains::default()).verify(Kind::PolicyUpdate, &record)),
        "bad_signature"
    );
    // A policy update signed with the default domain is refused under v2.
    let default_signed = Signer::with_clock(seed, 0, SigningDomains::default(), clock())
        .sign_control(common::sample::policy_update(2, 100))
        .encode_to_vec();
    assert_eq!(
        outcome(under(v2).verify(Kind::PolicyUpdate, &default_signed)),
        "bad_signature"
    );
}
