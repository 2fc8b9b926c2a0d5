//! The `ai.*` family (SPEC 4 steps 2, 7 and 8): per-kind structure, the policy allowlist and
//! the anomaly payload's metadata.

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

impl AiChecks for AnomalyEvent {
    const CONTENT_NAME: &'static str = "payload";
    const MAX_CONTENT: usize = MAX_PAYLOAD_BYTES;
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_str("id", &self.id, MAX_ID_BYTES)?;
        check_str("type", &self.r#type, MAX_STRING_BYTES)?;
        check_str("source", &self.source, MAX_STRING_BYTES)?;
        check_str("model_version", &self.model_version, MAX_STRING_BYTES)?;
        if !(1..=10).contains(&self.severity) {
            return fail(
                Reason::InvalidField,
                format!("severity {} outside 1..10", self.severity),
            );
        }
        if !(0.0..=1.0).contains(&self.confidence) {
            return fail(
                Reason::InvalidField,
                format!("confidence {} outside 0..1", self.confidence),
            );
        }
        if self.payload.is_empty() {
            return fail(Reason::InvalidField, "payload is empty");
        }
        Ok(())
    }
    fn check_after_signature(&self, _v: &Verifier) -> Result<(), VerifyError> {
        check_payload_metadata(&self.payload, self.severity, self.confidence)
    }
}

impl AiChecks for EvidenceEvent {
    const CONTENT_NAME: &'static str = "proof_blob";
    const MAX_CONTENT: usize = MAX_PROOF_BYTES;
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_str("id", &self.id, MAX_ID_BYTES)?;
        check_str("evidence_type", &self.evidence_type, MAX_STRING_BYTES)?;
        if self.refs.len() > MAX_REFS {
            return fail(
                Reason::InvalidField,
                format!("{} refs, over {MAX_REFS}", self.refs.len()),
            );
        }
        for r in &self.refs {
            check_len("ref", r, 32)?;
        }
        if self.coc.len() > MAX_COC {
            return fail(
                Reason::InvalidField,
                format!(
                    "{} chain-of-custody entries, over {MAX_COC}",
                    self.coc.len()
                ),
            );
        }
        for c in &self.coc {
            check_len("coc.ref_hash", &c.ref_hash, 32)?;
            check_len("coc.actor_id", &c.actor_id, 32)?;
            check_len("coc.signature", &c.signature, 64)?;
        }
        Ok(())
    }
}

impl AiChecks for PolicyEvent {
    const CONTENT_NAME: &'static str = "params";
    const MAX_CONTENT: usize = MAX_PAYLOAD_BYTES;
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_str("id", &self.id, MAX_ID_BYTES)?;
        check_str("action", &self.action, MAX_STRING_BYTES)?;
        check_str("rule", &self.rule, MAX_STRING_BYTES)
    }
    fn check_after_signature(&self, v: &Verifier) -> Result<(), VerifyError> {
        match &v.config.policy_allowlist {
            Some(allow)
                if !<[u8; 32]>::try_from(self.pubkey.as_slice())
                    .is_ok_and(|k| allow.contains(&k)) =>
            {
                fail(
                    Reason::UntrustedKey,
                    format!(
                        "policy signer {} is not in AI_POLICY_ALLOWED_PUBKEYS",
                        short_hex(&self.pubkey)
                    ),
                )
            }
            _ => Ok(()),
        }
    }
}

/// Step 8: the anomaly payload must be JSON whose numeric `severity` equals the field and
/// whose numeric `confidence` is within 1e-6 of it.
fn check_payload_metadata(
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
