//! The `ai.*` family (SPEC 4 steps 2, 7 and 8): the trait each AI kind's table row fills, and
//! the anomaly payload's metadata check its row names.

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

/// Step 8: the anomaly payload must be JSON whose numeric `severity` equals the field and
/// whose numeric `confidence` is within 1e-6 of it.
pub(crate) fn check_payload_metadata(
    payload: &[u8],
    severity: u32,
    confidence: f64,
) -> Result<(), VerifyError> {
    let mismatch = |d: String| VerifyError::new(Reason::PayloadMetadataMismatch, d);
    // An object, not any JSON: `[7, 0.9]` would fill a derived struct positionally.
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| mismatch(format!("payload is not JSON: {e}")))?;
    let serde_json::Value::Object(meta) = value else {
        return Err(mismatch("payload is not a JSON object".into()));
    };
    let number = |k: &str| match meta.get(k) {
        Some(serde_json::Value::Number(n)) => Some(n.clone()),
        _ => None,
    };
    struct Meta {
        severity: Option<serde_json::Number>,
        confidence: Option<serde_json::Number>,
    }
    let meta = Meta {
        severity: number("severity"),
        confidence: number("confidence"),
    };
    let sev = meta
        .severity
        .ok_or_else(|| mismatch("payload has no numeric severity".into()))?;
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
    let conf = meta
        .confidence
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
}
