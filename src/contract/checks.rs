//! The field rules the per-kind table's rows are written in (SPEC 4 step 2): lengths, string
//! sizes, canonical UUIDs, and the SHA-256 that content hashes are. A leaf: it knows no kind,
//! no message and no key.

use super::reason::{fail, Reason, VerifyError};
use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `b` must be exactly `want` bytes (`invalid_field`).
pub(crate) fn check_len(name: &str, b: &[u8], want: usize) -> Result<(), VerifyError> {
    if b.len() == want {
        Ok(())
    } else {
        fail(
            Reason::InvalidField,
            format!("{name} must be {want} bytes, got {}", b.len()),
        )
    }
}

/// `s` must be 1..=`max` bytes (`invalid_field`).
pub(crate) fn check_str(name: &str, s: &str, max: usize) -> Result<(), VerifyError> {
    if (1..=max).contains(&s.len()) {
        Ok(())
    } else {
        fail(
            Reason::InvalidField,
            format!("{name} must be 1..{max} bytes, got {}", s.len()),
        )
    }
}

/// True for a canonical lowercase hyphenated UUID of version 4 (RFC 4122 variant).
pub(crate) fn is_canonical_uuid_v4(s: &str) -> bool {
    s.len() == 36
        && !s.bytes().any(|b| b.is_ascii_uppercase())
        && uuid::Uuid::try_parse(s)
            .is_ok_and(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122)
}

/// At most the first 32 characters of `s`, for a refusal's detail.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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

    #[test]
    fn lengths_and_strings_name_the_field() {
        assert!(check_len("nonce", &[0; 16], 16).is_ok());
        let e = check_len("nonce", &[0; 15], 16).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidField);
        assert!(e.detail.contains("nonce must be 16 bytes, got 15"), "{e}");
        assert!(check_str("id", "", 4).is_err());
        assert!(check_str("id", "abcde", 4).is_err());
        assert!(check_str("id", "abcd", 4).is_ok());
        assert_eq!(truncate(&"é".repeat(40)).chars().count(), 32);
    }
}
