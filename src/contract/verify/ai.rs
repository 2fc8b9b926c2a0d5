//! The `ai.*` family (SPEC 4 steps 2, 7 and 8): the trait each AI kind's table row fills, and
//! the anomaly payload's metadata check its row names.

use super::payload::{scan_metadata, JsonError, Member};
use super::*;

/// Kind-specific checks of an AI message (SPEC 4 steps 2, 7 and 8).
pub trait AiChecks: AiEnvelope {
    /// The content field's name, for details.
    const CONTENT_NAME: &'static str;
    /// The content size limit (`payload_too_large` above it).
    const MAX_CONTENT: usize;
    /// Step 2: fields of this kind (`invalid_field`).
    fn check_structure(&self) -> Result<(), VerifyError>;
    /// Steps 7 and 8: allowlist (policy) and payload metadata (anomaly).
    fn check_after_signature(&self, _v: &Verifier) -> Result<(), VerifyError> {
        Ok(())
    }
}

/// Step 8: the anomaly payload must be a JSON object (as Go's `encoding/json` accepts it:
/// nested up to 10,000 levels; see `verify/payload.rs`) whose numeric `severity` equals the
/// field and whose numeric `confidence` is within 1e-6 of it.
pub(crate) fn check_payload_metadata(
    payload: &[u8],
    severity: u32,
    confidence: f64,
) -> Result<(), VerifyError> {
    let mismatch = |d: String| VerifyError::new(Reason::PayloadMetadataMismatch, d);
    // An object, not any JSON: `[7, 0.9]` would fill a derived struct positionally.
    let meta = scan_metadata(payload).map_err(|e| match e {
        JsonError::NotObject => mismatch("payload is not a JSON object".into()),
        e => mismatch(format!("payload is not JSON: {e}")),
    })?;
    // The raw tokens, read as serde_json reads numbers (u64, else i64, else f64).
    let number = |m: Option<Member<'_>>| match m {
        Some(Member::Number(token)) => serde_json::from_str::<serde_json::Number>(token).ok(),
        _ => None,
    };
    let sev =
        number(meta.severity).ok_or_else(|| mismatch("payload has no numeric severity".into()))?;
    let sev_ok = match (sev.as_u64(), sev.as_i64(), sev.as_f64()) {
        (Some(u), _, _) => u == u64::from(severity),
        (None, Some(_), _) => false,
        (None, None, Some(f)) => f.fract() == 0.0 && f == f64::from(severity),
        _ => false,
    };
    if !sev_ok {
        return Err(mismatch(format!(
            "payload severity {sev} differs from field {severity}"
        )));
    }
    let conf = number(meta.confidence)
        .and_then(|c| c.as_f64())
        .ok_or_else(|| mismatch("payload has no numeric confidence".into()))?;
    let within = (conf - confidence).abs() <= 1e-6; // false for NaN too
    if !within {
        return Err(mismatch(format!(
            "payload confidence {conf} differs from field {confidence}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_metadata() {
        assert!(check_payload_metadata(br#"{"severity":7,"confidence":0.9}"#, 7, 0.9).is_ok());
        assert!(
            check_payload_metadata(br#"{"severity":7.0,"confidence":0.9000001}"#, 7, 0.9).is_ok()
        );
        assert!(check_payload_metadata(br#"{"severity":7.5,"confidence":0.9}"#, 7, 0.9).is_err());
        // SPEC 4 step 8: an array is not an object, even with the right numbers in order.
        let e = check_payload_metadata(b"[7,0.9]", 7, 0.9).unwrap_err();
        assert_eq!(e.reason, Reason::PayloadMetadataMismatch);
        assert!(check_payload_metadata(br#"{"severity":"7","confidence":0.9}"#, 7, 0.9).is_err());
        assert!(check_payload_metadata(br#"{"severity":"7","confidence":0.9}"#, 7, 0.9).is_err());
        assert!(check_payload_metadata(br#"{"severity":7,"confidence":0.91}"#, 7, 0.9).is_err());
        assert!(check_payload_metadata(br#"{"confidence":0.9}"#, 7, 0.9).is_err());
        assert!(check_payload_metadata(br#"[7]"#, 7, 0.9).is_err());
    }

    /// `{"severity":7,"confidence":0.9,"x":...}` with `depth` containers open at the deepest
    /// point (the top-level object counts), the inner ones objects or arrays.
    fn nested(depth: usize, objects: bool) -> Vec<u8> {
        let inner = depth - 1;
        let (open, close) = if objects {
            ("{\"a\":", "}")
        } else {
            ("[", "]")
        };
        let mut json = String::from(r#"{"severity":7,"confidence":0.9,"x":"#);
        json.push_str(&open.repeat(inner));
        json.push('1');
        json.push_str(&close.repeat(inner));
        json.push('}');
        json.into_bytes()
    }

    /// Runs `f` on a thread with a 64 KiB stack: a recursive scanner would overflow it.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn payloads_nest_as_deep_as_go_allows() {
        on_small_stack(|| {
            for objects in [false, true] {
                for depth in [1, 2, 126, 127, 128, 200, 5_000, 10_000] {
                    let r = check_payload_metadata(&nested(depth, objects), 7, 0.9);
                    assert_eq!(r, Ok(()), "depth {depth}, objects {objects}");
                }
                for depth in [10_001, 10_002, 50_000] {
                    let e = check_payload_metadata(&nested(depth, objects), 7, 0.9).unwrap_err();
                    assert_eq!(e.reason, Reason::PayloadMetadataMismatch);
                    assert!(e.detail.contains("nested deeper than 10000"), "{e}");
                }
            }
        });
        // serde_json, which step 8 used before, refuses 128 levels.
        assert!(serde_json::from_slice::<serde_json::Value>(&nested(128, false)).is_err());
    }

    /// Whole signed records through the verifier, on a small stack: 126 to 10,000 levels
    /// verify `ok`, 10,001 is `payload_metadata_mismatch`, and nothing crashes.
    #[test]
    fn signed_anomalies_with_deep_payloads_verify_as_go_verifies_them() {
        use crate::contract::{FixedClock, Kind, Signer, TrustStore, VerifierConfig};
        use prost::Message as _;
        // 256 KiB: room for the verifier's own frames in a debug build, far too little for
        // 10,000 levels of recursion.
        let verify_all = || {
            let clock = std::sync::Arc::new(FixedClock::at_secs(1_790_000_000));
            let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
            let signer = Signer::with_clock(key, 1, Default::default(), clock.clone());
            let v = Verifier::with_clock(VerifierConfig::default(), TrustStore::default(), clock);
            let mut out = Vec::new();
            for (i, depth) in [126usize, 127, 200, 5_000, 10_000, 10_001]
                .into_iter()
                .enumerate()
            {
                let mut a = crate::cli::sample::anomaly(i as u64, 16);
                a.severity = 7;
                a.confidence = 0.9;
                a.payload = nested(depth, i % 2 == 0).into();
                let record = signer.sign_ai(a).encode_to_vec();
                let got = match v.verify(Kind::Anomaly, &record) {
                    Ok(_) => "ok",
                    Err(e) => e.reason.code(),
                };
                out.push((depth, got));
            }
            out
        };
        let outcomes = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(verify_all)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            outcomes,
            [
                (126, "ok"),
                (127, "ok"),
                (200, "ok"),
                (5_000, "ok"),
                (10_000, "ok"),
                (10_001, "payload_metadata_mismatch")
            ]
        );
    }

    #[test]
    fn payload_metadata_details() {
        let detail = |json: &[u8]| check_payload_metadata(json, 7, 0.9).unwrap_err().detail;
        assert_eq!(detail(b"[7,0.9]"), "payload is not a JSON object");
        assert_eq!(
            detail(br#"{"severity":7,"confidence":0.9} x"#),
            "payload is not JSON: invalid character 'x' after top-level value at byte 32"
        );
        assert_eq!(
            detail(br#"{"confidence":0.9}"#),
            "payload has no numeric severity"
        );
        assert_eq!(
            detail(br#"{"severity":7,"confidence":true}"#),
            "payload has no numeric confidence"
        );
        // Any number out of a float's range, anywhere, refuses the payload, as it did.
        let far = br#"{"severity":7,"confidence":0.9,"x":[1e400]}"#;
        assert!(detail(far).contains("out of range"), "{}", detail(far));
        let big = format!(
            r#"{{"severity":7,"confidence":0.9,"x":{}}}"#,
            "9".repeat(400)
        );
        assert!(detail(big.as_bytes()).contains("out of range"));
        let fine = format!(
            r#"{{"severity":7,"confidence":0.9,"x":{}}}"#,
            "9".repeat(299)
        );
        assert_eq!(check_payload_metadata(fine.as_bytes(), 7, 0.9), Ok(()));
    }

    #[test]
    fn payload_numbers_keep_their_rules() {
        let check = |json: &str, sev| check_payload_metadata(json.as_bytes(), sev, 0.9);
        assert!(check(r#"{"severity":7e0,"confidence":9e-1}"#, 7).is_ok());
        assert!(check(r#"{"severity":0.7e1,"confidence":0.9}"#, 7).is_ok());
        assert!(check(r#"{"severity":-7,"confidence":0.9}"#, 7).is_err());
        assert!(check(r#"{"severity":18446744073709551623,"confidence":0.9}"#, 7).is_err());
        assert!(check(r#"{"severity":3,"severity":7,"confidence":0.9}"#, 7).is_ok());
        assert!(check(r#"{"severity":7,"severity":"7","confidence":0.9}"#, 7).is_err());
        assert!(check(r#"{"sev\u0065rity":7,"confidence":0.9}"#, 7).is_ok());
        assert!(check(r#"{"x":{"severity":7},"confidence":0.9}"#, 7).is_err());
        assert!(check(r#"{"severity":7,"confidence":0.9,"s":"\ud800"}"#, 7).is_ok());
    }
}
