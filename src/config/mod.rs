//! Configuration of SPEC.md section 8: from environment variables ([`Config::from_env`]) or
//! built in code ([`Config::builder`]), with the staging/production guards.

mod env;
mod environment;
mod secret;
mod settings;

pub use environment::Environment;
pub use secret::Secret;
pub use settings::{
    Assignor, Compression, ConsumerSettings, GroupProtocol, ProducerSettings, StartFrom,
    VerificationSettings, WarmupSettings,
};

use crate::contract::{Kind, SigningDomains, VerifierConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long the producer waits to fill a batch before sending it (a setting of the
/// configuration's, which the delivery-timeout floor counts; the Kafka layer applies it).
pub(crate) const PRODUCER_LINGER: Duration = Duration::from_millis(2);

/// A configuration error naming the variable at fault. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {detail}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The environment variable (or builder field) at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

fn err(var: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        detail: detail.into(),
    }
}

/// SASL mechanism (`KAFKA_SASL_MECHANISM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    /// SCRAM-SHA-512 (default).
    #[default]
    ScramSha512,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// PLAIN (refused in staging and production).
    Plain,
}

impl SaslMechanism {
    /// The Kafka name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

/// SASL credentials. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle (PEM) to trust; the platform has none built in, so this is required with TLS.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    pub client_key: Option<PathBuf>,
}

/// Everything meshbus needs to reach the bus.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `KAFKA_BROKERS`.
    pub brokers: Vec<String>,
    /// `KAFKA_CONSUMER_GROUP` (default `cybermesh-consensus`).
    pub consumer_group: String,
    /// `NODE_ID` (default 0).
    pub node_id: u32,
    /// `ENVIRONMENT`.
    pub environment: Environment,
    /// `KAFKA_TLS_ENABLED` plus CA and client certificate.
    pub tls: Option<Tls>,
    /// SASL (on when a user name is set).
    pub sasl: Option<Sasl>,
    /// `KAFKA_REQUEST_TIMEOUT_MS` (default 30000): bound on every broker request and connect.
    pub request_timeout: Duration,
    /// Topic names per kind (SPEC 1 overrides).
    pub topics: BTreeMap<Kind, String>,
    /// `KAFKA_DLQ_TOPIC` (default `ai.dlq.v1`).
    pub dlq_topic: String,
    /// Producer knobs.
    pub producer: ProducerSettings,
    /// Consumer knobs.
    pub consumer: ConsumerSettings,
    /// `CONTROL_*_SIGNING_DOMAIN`: the control signing domains, for signers and verifiers.
    pub signing_domains: SigningDomains,
    /// Verification settings (skews, policy allowlist).
    pub verification: VerificationSettings,
    /// `MESHBUS_SHUTDOWN_TIMEOUT_MS` (default 20000): how long a graceful stop may take
    /// (flush, finish the records in hand, commit, leave the groups).
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: vec!["127.0.0.1:9092".into()],
            consumer_group: "cybermesh-consensus".into(),
            node_id: 0,
            environment: Environment::Development,
            tls: None,
            sasl: None,
            request_timeout: Duration::from_millis(30_000),
            topics: Kind::ALL
                .into_iter()
                .map(|k| (k, k.default_topic().to_string()))
                .collect(),
            dlq_topic: "ai.dlq.v1".into(),
            producer: ProducerSettings::default(),
            consumer: ConsumerSettings::default(),
            signing_domains: SigningDomains::default(),
            verification: VerificationSettings::default(),
            shutdown_timeout: Duration::from_millis(20_000),
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// Reads the SPEC 8 variables from the process environment and validates them.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the SPEC 8 variables through `get` (tests pass a map) and validates them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        for read in [
            env::identity,
            env::security,
            env::timeouts_and_topics,
            env::producer,
            env::consumer,
        ] {
            read(&mut c, &get)?;
        }
        (c.signing_domains, c.verification) = Self::contract_settings(&get)?;
        c.validate()?;
        Ok(c)
    }

    /// Only the contract settings (signing domains, skews, policy allowlist) from the process
    /// environment: what the offline commands (`sign`, `verify`) need, without broker settings.
    pub fn contract_from_env() -> Result<(SigningDomains, VerificationSettings), ConfigError> {
        Self::contract_settings(&|k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    fn contract_settings(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SigningDomains, VerificationSettings), ConfigError> {
        let mut domains = SigningDomains::default();
        let mut settings = VerificationSettings::default();
        // The per-kind table names each signed control kind's domain variable.
        for spec in &crate::contract::kinds::KINDS {
            if let Some(v) = spec.domain_env.and_then(get) {
                domains.set(spec.kind, v.trim());
            }
        }
        if let Some(v) = get("KAFKA_MAX_TIMESTAMP_SKEW") {
            settings.ai_skew_secs = parse_num("KAFKA_MAX_TIMESTAMP_SKEW", &v, 1)? as i64;
        }
        if let Some(v) = get("CONTROL_TIMESTAMP_SKEW") {
            settings.control_skew_secs = parse_num("CONTROL_TIMESTAMP_SKEW", &v, 1)? as i64;
        }
        let (list, file) = (
            get("AI_POLICY_ALLOWED_PUBKEYS"),
            get("AI_POLICY_ALLOWED_PUBKEYS_FILE"),
        );
        let keys = match (list, file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "AI_POLICY_ALLOWED_PUBKEYS_FILE",
                    "set either it or AI_POLICY_ALLOWED_PUBKEYS, not both",
                ))
            }
            (Some(v), None) => Some(
                crate::contract::trust::parse_allowlist(&v, "AI_POLICY_ALLOWED_PUBKEYS")
                    .map_err(|e| err("AI_POLICY_ALLOWED_PUBKEYS", e.to_string()))?,
            ),
            (None, Some(f)) => {
                let path = std::path::PathBuf::from(f.trim());
                let keys = crate::contract::trust::load_allowlist(&path)
                    .map_err(|e| err("AI_POLICY_ALLOWED_PUBKEYS_FILE", e.to_string()))?;
                settings.policy_allowlist_file = Some(path);
                Some(keys)
            }
            (None, None) => None,
        };
        settings.policy_allowlist = keys.map(|k| {
            let mut v: Vec<[u8; 32]> = k.into_iter().collect();
            v.sort();
            v
        });
        Ok((domains, settings))
    }

    /// A signer for `key` with this configuration's node id (in its nonces) and signing
    /// domains, the ones its verifier checks.
    pub fn signer(&self, key: ed25519_dalek::SigningKey) -> crate::contract::Signer {
        crate::contract::Signer::new(key, self.node_id, self.signing_domains.clone())
    }

    /// The verifier configuration these settings ask for: skews, the replay window (twice
    /// the `ai.*` skew), the policy allowlist and the control signing domains.
    pub fn verifier_config(&self) -> VerifierConfig {
        verifier_config(&self.signing_domains, &self.verification)
    }

    /// The SPEC 8 guards: brokers present; in staging and production TLS is required and PLAIN
    /// is refused; compression available in this build.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(err("KAFKA_BROKERS", "no broker given"));
        }
        if self.environment.is_strict() {
            if self.tls.is_none() {
                return Err(err(
                    "KAFKA_TLS_ENABLED",
                    format!("TLS is required in {}", self.environment),
                ));
            }
            if self
                .sasl
                .as_ref()
                .is_some_and(|s| s.mechanism == SaslMechanism::Plain)
            {
                return Err(err(
                    "KAFKA_SASL_MECHANISM",
                    format!("PLAIN is refused in {}", self.environment),
                ));
            }
        }
        if let Some(t) = &self.tls {
            if t.client_cert.is_some() != t.client_key.is_some() {
                return Err(err(
                    "KAFKA_CLIENT_KEY",
                    "KAFKA_CLIENT_CERT and KAFKA_CLIENT_KEY go together",
                ));
            }
        }
        let floor = self.request_timeout + PRODUCER_LINGER;
        if self.producer.delivery_timeout < floor {
            return Err(err(
                "KAFKA_DELIVERY_TIMEOUT_MS",
                format!(
                    "must be at least linger + request timeout ({} ms)",
                    floor.as_millis()
                ),
            ));
        }
        if self.producer.compression == Compression::Zstd && !cfg!(feature = "c-codecs") {
            return Err(err(
                "KAFKA_PRODUCER_COMPRESSION",
                "zstd encoding needs meshbus built with --features c-codecs (its encoder is C)",
            ));
        }
        Ok(())
    }

    /// The topic of `kind`.
    pub fn topic(&self, kind: Kind) -> &str {
        self.topics
            .get(&kind)
            .map(String::as_str)
            .unwrap_or(kind.default_topic())
    }

    /// The kind carried by `topic`, if it is one of the configured topics.
    pub fn kind_of_topic(&self, topic: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| self.topic(*k) == topic)
    }

    /// The consumer group for a role: validators get `<group>-node-<NODE_ID>` (SPEC 1).
    /// A validator's group: one per node, `<KAFKA_CONSUMER_GROUP>-node-<NODE_ID>` (SPEC 1), so
    /// every validator sees every record.
    pub fn validator_group(&self) -> String {
        self.group_for(true)
    }

    /// Any other role's group: `KAFKA_CONSUMER_GROUP` as is, its partitions shared.
    pub fn shared_group(&self) -> String {
        self.group_for(false)
    }

    pub(crate) fn group_for(&self, validator: bool) -> String {
        if validator {
            format!("{}-node-{}", self.consumer_group, self.node_id)
        } else {
            self.consumer_group.clone()
        }
    }
}

/// The verifier configuration for `domains` and `v`: skews, the replay window (twice the
/// `ai.*` skew), the policy allowlist and the control signing domains.
pub fn verifier_config(domains: &SigningDomains, v: &VerificationSettings) -> VerifierConfig {
    VerifierConfig {
        ai_skew_secs: v.ai_skew_secs,
        control_skew_secs: v.control_skew_secs,
        replay_window_secs: 2 * v.ai_skew_secs,
        policy_allowlist: v
            .policy_allowlist
            .as_ref()
            .map(|k| k.iter().copied().collect()),
        domains: domains.clone(),
        ..VerifierConfig::default()
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(err(var, "must be true or false")),
    }
}

fn parse_num(var: &'static str, v: &str, min: u64) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(err(var, format!("must be an integer >= {min}"))),
    }
}

/// Builds a [`Config`] in code.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
    /// Broker addresses (`host:port`).
    pub fn brokers(mut self, b: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.0.brokers = b.into_iter().map(Into::into).collect();
        self
    }
    /// Environment.
    pub fn environment(mut self, e: Environment) -> Self {
        self.0.environment = e;
        self
    }
    /// Node id.
    pub fn node_id(mut self, id: u32) -> Self {
        self.0.node_id = id;
        self
    }
    /// Base consumer group.
    pub fn consumer_group(mut self, g: impl Into<String>) -> Self {
        self.0.consumer_group = g.into();
        self
    }
    /// TLS with a CA file.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.0.tls = Some(tls);
        self
    }
    /// SASL credentials.
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.0.sasl = Some(Sasl {
            mechanism,
            username: user.into(),
            password: Secret::new(password),
        });
        self
    }
    /// Request timeout.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.0.request_timeout = t;
        self
    }
    /// Topic override for a kind.
    pub fn topic(mut self, kind: Kind, topic: impl Into<String>) -> Self {
        self.0.topics.insert(kind, topic.into());
        self
    }
    /// DLQ topic.
    pub fn dlq_topic(mut self, t: impl Into<String>) -> Self {
        self.0.dlq_topic = t.into();
        self
    }
    /// Producer knobs.
    pub fn producer(mut self, p: ProducerSettings) -> Self {
        self.0.producer = p;
        self
    }
    /// Consumer knobs.
    pub fn consumer(mut self, c: ConsumerSettings) -> Self {
        self.0.consumer = c;
        self
    }
    /// The signing domain of a signed control kind (`CONTROL_*_SIGNING_DOMAIN`), for the
    /// signers and the verifier alike.
    pub fn signing_domain(mut self, kind: Kind, domain: impl Into<String>) -> Self {
        self.0.signing_domains.set(kind, domain);
        self
    }
    /// Verification settings (skews, replay window, policy allowlist, read-back bounds).
    pub fn verification(mut self, v: VerificationSettings) -> Self {
        self.0.verification = v;
        self
    }
    /// How long a graceful stop may take (`MESHBUS_SHUTDOWN_TIMEOUT_MS`).
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.0.shutdown_timeout = t;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests;
