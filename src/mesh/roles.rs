//! The CyberMesh roles as small types over a [`Mesh`]: a validator, an enforcement agent, the
//! AI service and the backend. `meshbus demo` runs the whole mesh from them, and the tests
//! build the same roles; a deployment's role is one of them with its own handler.

use super::{Mesh, ShutdownReport};
use crate::config::Config;
use crate::consumer::{Consumed, ConsumerOptions, HandlerResult, Stats};
use crate::contract::messages::PolicyAckEvent;
use crate::contract::{Clock as _, Kind, Message, Signer, SystemClock, Verifier};
use crate::kafka::KafkaError;
use crate::metrics::Metrics;
use crate::producer::Producer;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A handler usable for several kinds.
pub trait SharedHandler<F>: Fn(Consumed) -> F + Clone + Send + Sync + 'static
where
    F: Future<Output = HandlerResult> + Send + 'static,
{
}

impl<T, F> SharedHandler<F> for T
where
    T: Fn(Consumed) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HandlerResult> + Send + 'static,
{
}

/// A role: its mesh and the counters of its one consumer, if it has one.
pub struct Role {
    mesh: Mesh,
    stats: Option<Arc<Stats>>,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Role").field("mesh", &self.mesh).finish()
    }
}

impl Role {
    async fn start<F, H>(
        config: Config,
        signer: Option<Signer>,
        verifier: Verifier,
        metrics: Arc<Metrics>,
        consume: Option<(ConsumerOptions, &[Kind], H)>,
    ) -> Result<Role, KafkaError>
    where
        F: Future<Output = HandlerResult> + Send + 'static,
        H: SharedHandler<F>,
    {
        let mut mesh = Mesh::connect_with_metrics(config, signer, verifier, metrics).await?;
        let mut stats = None;
        if let Some((options, kinds, handler)) = consume {
            let mut consumer = mesh.consumer(options)?;
            for kind in kinds {
                consumer = consumer.handle(*kind, handler.clone());
            }
            stats = Some(mesh.register(consumer));
            mesh.start();
        }
        Ok(Role { mesh, stats })
    }

    /// The role's consumer's counters (zeros for a role without one).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone().unwrap_or_default()
    }

    /// The role's signing producer.
    pub fn producer(&self) -> &Arc<Producer> {
        self.mesh.producer()
    }

    /// The role's mesh.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Stops the role gracefully (see [`Mesh::shutdown`]).
    pub async fn stop(self, deadline: Duration) -> ShutdownReport {
        self.mesh.shutdown(deadline).await
    }
}

/// A validator: verifies every `ai.*` record (anomalies, evidence, policies) in its own
/// per-node group `<KAFKA_CONSUMER_GROUP>-node-<NODE_ID>`, so every node sees every record,
/// and hands what verifies to `handler`.
pub async fn validator<F, H>(
    config: Config,
    verifier: Verifier,
    metrics: Arc<Metrics>,
    handler: H,
) -> Result<Role, KafkaError>
where
    F: Future<Output = HandlerResult> + Send + 'static,
    H: SharedHandler<F>,
{
    let options = ConsumerOptions::validator(&config);
    let kinds = [Kind::Anomaly, Kind::Evidence, Kind::Policy];
    Role::start(
        config,
        None,
        verifier,
        metrics,
        Some((options, &kinds[..], handler)),
    )
    .await
}

/// An enforcement agent: applies each verified policy update (counting it in `applied`) and
/// acknowledges it on `control.policy.ack.v1`, signed with `signer` (SPEC 3c headers). A
/// failed acknowledgement is a handler failure: retried, then dead-lettered.
pub async fn agent(
    config: Config,
    signer: Signer,
    verifier: Verifier,
    metrics: Arc<Metrics>,
    applied: Arc<AtomicU64>,
) -> Result<Role, KafkaError> {
    let options = ConsumerOptions::shared(&config);
    let instance = format!("agent-{}", config.node_id);
    let mut role = Role::start::<std::future::Ready<HandlerResult>, fn(Consumed) -> _>(
        config,
        Some(signer),
        verifier,
        metrics,
        None,
    )
    .await?;
    let out = role.producer().clone();
    let handler = move |r: Consumed| {
        let (out, applied, instance) = (out.clone(), applied.clone(), instance.clone());
        async move {
            let Message::PolicyUpdate(u) = r.message else {
                return Err("not a policy update".to_string());
            };
            applied.fetch_add(1, Ordering::Relaxed);
            let now = SystemClock.now_secs();
            let ack = PolicyAckEvent {
                policy_id: u.policy_id,
                result: "applied".into(),
                applied_at: now,
                acked_at: now,
                controller_instance: instance,
                ..Default::default()
            };
            out.send_policy_ack(ack)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let consumer = role
        .mesh
        .consumer(options)?
        .handle(Kind::PolicyUpdate, handler);
    role.stats = Some(role.mesh.register(consumer));
    role.mesh.start();
    Ok(role)
}

/// The AI service: publishes `ai.*` records through [`Role::producer`] (signed with
/// `signer`) and reads the backend's commits and the agents' acknowledgements (verified
/// against `verifier`'s ack keys) into `feedback`.
pub async fn ai_service<F, H>(
    config: Config,
    signer: Signer,
    verifier: Verifier,
    metrics: Arc<Metrics>,
    feedback: H,
) -> Result<Role, KafkaError>
where
    F: Future<Output = HandlerResult> + Send + 'static,
    H: SharedHandler<F>,
{
    let options = ConsumerOptions::shared(&config);
    let kinds = [Kind::Commit, Kind::PolicyAck];
    Role::start(
        config,
        Some(signer),
        verifier,
        metrics,
        Some((options, &kinds[..], feedback)),
    )
    .await
}

/// The backend: publishes commits, policy updates, reputation and evidence requests through
/// [`Role::producer`], signed with `signer`; consumes nothing here.
pub async fn backend(
    config: Config,
    signer: Signer,
    metrics: Arc<Metrics>,
) -> Result<Role, KafkaError> {
    let verifier = Verifier::new(config.verifier_config(), Default::default());
    Role::start::<std::future::Ready<HandlerResult>, fn(Consumed) -> _>(
        config,
        Some(signer),
        verifier,
        metrics,
        None,
    )
    .await
}
