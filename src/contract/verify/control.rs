//! The `control.*` family (SPEC 4, control order): the trait each control kind's table row
//! fills.

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
