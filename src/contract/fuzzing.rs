//! Entry points for the fuzz targets into checks the contract keeps crate-private (cargo
//! feature `fuzzing`, never in a release build).

use super::reason::VerifyError;

/// SPEC 4 step 8 on its own: `payload` must be a JSON object, as Go's `encoding/json` accepts
/// it, whose `severity` and `confidence` agree with the fields (`payload_metadata_mismatch`).
pub fn check_payload_metadata(
    payload: &[u8],
    severity: u32,
    confidence: f64,
) -> Result<(), VerifyError> {
    super::verify::check_payload_metadata(payload, severity, confidence)
}
