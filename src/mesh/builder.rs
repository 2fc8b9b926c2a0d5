//! [`MeshBuilder`]: the one way to make a [`Mesh`], from one configuration. What the role
//! needs is what it gives: a signing key to send signed records, trust to verify what it
//! consumes; the signer takes its node id and signing domains from the configuration, the
//! same domains the verifier checks.

use super::Mesh;
use crate::config::{Config, ConfigError};
use crate::contract::{Kind, Signer, TrustStore, Verifier};
use crate::kafka::KafkaError;
use crate::metrics::Metrics;
use std::sync::Arc;

/// Why a [`Mesh`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The configuration is invalid (names the variable).
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The cluster could not be reached, or refused the connection.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The signer given signs a control kind under another domain than the configuration's
    /// (`KAFKA_SIGNING_DOMAIN_*`): every record it sent would fail verification as
    /// `bad_signature`. [`MeshBuilder::signer_overriding_domains`] allows it on purpose.
    #[error(
        "the signer signs {kind} records under {signer:?}, the configuration under {config:?}"
    )]
    SignerDomain {
        /// The first kind whose domains differ.
        kind: Kind,
        /// The signer's domain.
        signer: String,
        /// The configuration's domain.
        config: String,
    },
    /// A role that signs was built without a signing key ([`MeshBuilder::signing_key`]).
    #[error("the {role} role signs what it sends: give the builder a signing key")]
    NoSigner {
        /// The role.
        role: &'static str,
    },
}

impl MeshError {
    /// A stable reason code (`config`, `signer_domain`, or the Kafka error's).
    pub fn code(&self) -> &'static str {
        match self {
            MeshError::Config(_) => "config",
            MeshError::Kafka(e) => e.code(),
            MeshError::SignerDomain { .. } => "signer_domain",
            MeshError::NoSigner { .. } => "no_signer",
        }
    }
}

/// Builds a [`Mesh`]: `Mesh::builder(config)`, then what the role needs, then
/// [`MeshBuilder::connect`].
///
/// - a producing role: [`MeshBuilder::signing_key`];
/// - a consuming role: [`MeshBuilder::trust`] (the control signers' keys, and the ack
///   keys of the enforcement agents; `ai.*` records carry their own key and are checked
///   against the `ai.policy.v1` allowlist);
/// - both: both.
#[derive(Debug)]
#[must_use = "a builder does nothing until connect"]
pub struct MeshBuilder {
    config: Config,
    signer: Option<Signer>,
    override_domains: bool,
    trust: TrustStore,
    verifier: Option<Verifier>,
    metrics: Option<Arc<Metrics>>,
}

impl MeshBuilder {
    pub(super) fn new(config: Config) -> MeshBuilder {
        MeshBuilder {
            config,
            signer: None,
            override_domains: false,
            trust: TrustStore::default(),
            verifier: None,
            metrics: None,
        }
    }

    /// Signs with `key`, under the configuration's node id and signing domains.
    pub fn signing_key(mut self, key: ed25519_dalek::SigningKey) -> Self {
        self.signer = Some(self.config.signer(key));
        self
    }

    /// Signs with a signer built elsewhere (on an injected clock, say). [`MeshBuilder::connect`]
    /// refuses it if its domains differ from the configuration's.
    pub fn signer(mut self, signer: Signer) -> Self {
        self.signer = Some(signer);
        self.override_domains = false;
        self
    }

    /// Signs with `signer` whatever its domains: for a deliberate split, such as a migration
    /// that signs under a new domain before the validators verify it.
    pub fn signer_overriding_domains(mut self, signer: Signer) -> Self {
        self.signer = Some(signer);
        self.override_domains = true;
        self
    }

    /// Verifies control records against `trust` (replacing the empty default).
    pub fn trust(mut self, trust: TrustStore) -> Self {
        self.trust = trust;
        self
    }

    /// Verifies with `verifier` instead of one built from the configuration and
    /// [`MeshBuilder::trust`] (for an injected clock; give it `config.verifier_config()`).
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Records into `metrics` (for a host that serves its own registry) instead of a fresh one.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The configuration the mesh will use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same builder, or [`MeshError::NoSigner`] if it has no signing key.
    pub(super) fn requiring_signer(self, role: &'static str) -> Result<Self, MeshError> {
        match self.signer {
            Some(_) => Ok(self),
            None => Err(MeshError::NoSigner { role }),
        }
    }

    /// Checks the configuration and the signer, then connects.
    pub async fn connect(self) -> Result<Mesh, MeshError> {
        self.config.validate()?;
        if let (Some(signer), false) = (&self.signer, self.override_domains) {
            for kind in Kind::ALL {
                let (mine, wanted) = (
                    signer.domains().for_kind(kind),
                    self.config.signing_domains.for_kind(kind),
                );
                if mine != wanted {
                    return Err(MeshError::SignerDomain {
                        kind,
                        signer: String::from_utf8_lossy(mine).into_owned(),
                        config: String::from_utf8_lossy(wanted).into_owned(),
                    });
                }
            }
        }
        let verifier = match self.verifier {
            Some(v) => v,
            None => Verifier::new(self.config.verifier_config(), self.trust),
        };
        let metrics = self.metrics.unwrap_or_else(Metrics::new);
        Ok(Mesh::connect_parts(self.config, self.signer, verifier, metrics).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SigningDomains;

    fn config() -> Config {
        Config::builder()
            .brokers(["127.0.0.1:9"])
            .signing_domain(Kind::PolicyUpdate, "control.policy.v2")
            .build()
            .unwrap()
    }

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[4; 32])
    }

    #[tokio::test]
    async fn a_signer_under_other_domains_is_refused_before_connecting() {
        let stray = Signer::new(key(), 1, SigningDomains::default());
        let e = Mesh::builder(config())
            .signer(stray)
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.code(), "signer_domain", "{e}");
        assert!(
            e.to_string().contains("control.policy.v2"),
            "names the configured domain: {e}"
        );
    }

    #[test]
    fn the_signing_key_takes_the_node_id_and_domains_from_the_configuration() {
        let c = config();
        let b = Mesh::builder(c.clone()).signing_key(key());
        let signer = b.signer.as_ref().unwrap();
        assert_eq!(signer.domains(), &c.signing_domains);
        assert_eq!(
            signer.domains().for_kind(Kind::PolicyUpdate),
            b"control.policy.v2"
        );
    }
}
