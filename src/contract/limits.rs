//! Size limits of SPEC.md section 4.

/// Largest record value accepted or sent (`too_large` above).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest anomaly payload, policy params or policy-update rule_data.
pub const MAX_PAYLOAD_BYTES: usize = 512 << 10;
/// Largest evidence proof_blob.
pub(crate) const MAX_PROOF_BYTES: usize = 256 << 10;
/// Longest id string.
pub const MAX_ID_BYTES: usize = 128;
/// Longest other string.
pub const MAX_STRING_BYTES: usize = 256;
/// Most evidence refs.
pub(crate) const MAX_REFS: usize = 1000;
/// Most chain-of-custody entries.
pub(crate) const MAX_COC: usize = 100;
/// Most anomaly ids in a commit.
pub(crate) const MAX_ANOMALY_IDS: usize = 10_000;
