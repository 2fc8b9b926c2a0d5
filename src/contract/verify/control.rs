//! The `control.*` family (SPEC 4, control order): per-kind structure and the policy update's
//! rule hash.

use super::*;

/// Kind-specific checks of a control message (SPEC 4, control order).
pub trait ControlChecks: ControlSigned {
    /// Structure of this kind (`invalid_field`).
    fn check_structure(&self) -> Result<(), VerifyError>;
    /// Policy update: `rule_hash` must be SHA-256(rule_data).
    fn check_content_hash(&self) -> Result<(), VerifyError> {
        Ok(())
    }
}

impl ControlChecks for CommitEvent {
    fn check_structure(&self) -> Result<(), VerifyError> {
        if self.height < 0 {
            return fail(Reason::InvalidField, format!("height {} < 0", self.height));
        }
        check_len("block_hash", &self.block_hash, 32)?;
        check_len("state_root", &self.state_root, 32)?;
        if self.anomaly_ids.len() > MAX_ANOMALY_IDS {
            return fail(
                Reason::InvalidField,
                format!(
                    "{} anomaly_ids, over {MAX_ANOMALY_IDS}",
                    self.anomaly_ids.len()
                ),
            );
        }
        if let Some(bad) = self.anomaly_ids.iter().find(|id| !is_canonical_uuid_v4(id)) {
            return fail(
                Reason::InvalidField,
                format!("anomaly id {:?} is not a lowercase UUIDv4", truncate(bad)),
            );
        }
        let counts = u64::from(self.anomaly_count)
            + u64::from(self.evidence_count)
            + u64::from(self.policy_count);
        if counts > u64::from(self.tx_count) {
            return fail(
                Reason::InvalidField,
                format!("counts sum {counts} exceeds tx_count {}", self.tx_count),
            );
        }
        Ok(())
    }
}

impl ControlChecks for PolicyUpdateEvent {
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_str("policy_id", &self.policy_id, MAX_ID_BYTES)?;
        check_str("action", &self.action, MAX_STRING_BYTES)?;
        check_str("rule_type", &self.rule_type, MAX_STRING_BYTES)?;
        if self.rule_data.is_empty() || self.rule_data.len() > MAX_PAYLOAD_BYTES {
            return fail(
                Reason::InvalidField,
                format!(
                    "rule_data must be 1..{MAX_PAYLOAD_BYTES} bytes, got {}",
                    self.rule_data.len()
                ),
            );
        }
        check_len("rule_hash", &self.rule_hash, 32)?;
        if self.effective_height < 0 || self.expiration_height < 0 {
            return fail(
                Reason::InvalidField,
                "negative effective or expiration height",
            );
        }
        if self.expiration_height != 0 && self.expiration_height <= self.effective_height {
            return fail(
                Reason::InvalidField,
                format!(
                    "expiration_height {} not after effective_height {}",
                    self.expiration_height, self.effective_height
                ),
            );
        }
        Ok(())
    }
    fn check_content_hash(&self) -> Result<(), VerifyError> {
        if sha256(&self.rule_data).as_slice() != self.rule_hash.as_slice() {
            return fail(
                Reason::ContentHashMismatch,
                "rule_hash differs from SHA-256(rule_data)",
            );
        }
        Ok(())
    }
}

impl ControlChecks for ReputationEvent {
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_len("ai_producer_id", &self.ai_producer_id, 32)?;
        if !(-100..=100).contains(&self.score) {
            return fail(
                Reason::InvalidField,
                format!("score {} outside -100..100", self.score),
            );
        }
        Ok(())
    }
}

impl ControlChecks for EvidenceRequestEvent {
    fn check_structure(&self) -> Result<(), VerifyError> {
        check_str("request_id", &self.request_id, MAX_ID_BYTES)?;
        if self.evidence_quality_score > 10 {
            return fail(
                Reason::InvalidField,
                format!(
                    "evidence_quality_score {} over 10",
                    self.evidence_quality_score
                ),
            );
        }
        Ok(())
    }
}

/// True for a canonical lowercase hyphenated UUID of version 4 (RFC 4122 variant).
pub fn is_canonical_uuid_v4(s: &str) -> bool {
    s.len() == 36
        && !s.bytes().any(|b| b.is_ascii_uppercase())
        && uuid::Uuid::try_parse(s)
            .is_ok_and(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_rules() {
        assert!(is_canonical_uuid_v4("a5c77cca-2bcc-44ab-a60b-c403b1c26501"));
        assert!(!is_canonical_uuid_v4(
            "A5C77CCA-2BCC-44AB-A60B-C403B1C26501"
        ));
        assert!(!is_canonical_uuid_v4(
            "a5c77cca-2bcc-14ab-a60b-c403b1c26501"
        ));
        assert!(!is_canonical_uuid_v4(
            "a5c77cca-2bcc-44ab-c60b-c403b1c26501"
        ));
        assert!(!is_canonical_uuid_v4("a5c77cca2bcc44aba60bc403b1c26501"));
        assert!(!is_canonical_uuid_v4(
            "{a5c77cca-2bcc-44ab-a60b-c403b1c265}"
        ));
    }
}
