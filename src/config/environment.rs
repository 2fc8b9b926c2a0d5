//! `ENVIRONMENT`: development, staging or production.

use std::fmt;
use std::str::FromStr;

/// The deployment environment; staging and production turn on the strict guards of SPEC 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Environment {
    /// Local work: no TLS requirement, key file modes unchecked.
    #[default]
    Development,
    /// Pre-production: strict guards.
    Staging,
    /// Production: strict guards.
    Production,
}

impl Environment {
    /// True for staging and production.
    pub(crate) fn is_strict(self) -> bool {
        !matches!(self, Environment::Development)
    }
    /// The private key file policy of this environment: 0600 in staging and production.
    pub fn key_policy(self) -> crate::contract::keys::KeyPolicy {
        if self.is_strict() {
            crate::contract::keys::KeyPolicy::OwnerOnly
        } else {
            crate::contract::keys::KeyPolicy::Lenient
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "development" | "dev" => Ok(Environment::Development),
            "staging" => Ok(Environment::Staging),
            "production" | "prod" => Ok(Environment::Production),
            other => Err(format!(
                "ENVIRONMENT must be development, staging or production, not `{other}`"
            )),
        }
    }
}
