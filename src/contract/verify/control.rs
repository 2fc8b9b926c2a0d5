//! The `control.*` family (SPEC 4, control order): the trait each control kind's table row
//! fills, and the UUID rule commits use.

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

/// True for a canonical lowercase hyphenated UUID of version 4 (RFC 4122 variant).
pub(crate) fn is_canonical_uuid_v4(s: &str) -> bool {
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
