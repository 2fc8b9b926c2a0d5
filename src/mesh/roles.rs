//! The CyberMesh roles as small types over a [`Mesh`]: a validator, an enforcement agent, the
//! AI service and the backend. `meshbus demo` runs the whole mesh from them, and the tests
//! build the same roles; a deployment's role is one of them with its own handler.

use super::{Mesh, MeshBuilder, MeshError, ShutdownReport};
use crate::consumer::{Consumed, HandlerResult, Stats, Verified};
use crate::contract::kinds::{Family, KINDS};
use crate::contract::messages::{PolicyAckEvent, PolicyUpdateEvent};
use crate::contract::{Clock as _, Kind, SystemClock};
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

/// The kinds of one family, in table order (what a validator verifies: every `ai.*` kind).
fn family(family: Family) -> Vec<Kind> {
    KINDS
        .iter()
        .filter(|s| s.family == family)
        .map(|s| s.kind)
        .collect()
}

impl Role {
    /// A role that only produces.
    async fn producing(builder: MeshBuilder) -> Result<Role, MeshError> {
        Ok(Role {
            mesh: builder.connect().await?,
            stats: None,
        })
    }

    /// Registers and starts the role's one consumer.
    fn consume(&mut self, consumer: crate::consumer::Consumer) {
        self.stats = Some(self.mesh.register(consumer));
        self.mesh.start();
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

/// A validator: verifies every `ai.*` record (anomalies, evidence, policies: the table's `ai`
/// family) in its own per-node group `<KAFKA_CONSUMER_GROUP>-node-<NODE_ID>`, so every node
/// sees every record, and hands what verifies to `handler`. `builder` needs no signing key.
pub async fn validator<F, H>(builder: MeshBuilder, handler: H) -> Result<Role, MeshError>
where
    F: Future<Output = HandlerResult> + Send + 'static,
    H: SharedHandler<F>,
{
    let group = builder.config().validator_group();
    let mut role = Role::producing(builder).await?;
    let mut consumer = role.mesh.consumer(group)?;
    for kind in family(Family::Ai) {
        consumer = consumer.handle(kind, handler.clone());
    }
    role.consume(consumer);
    Ok(role)
}

/// An enforcement agent: applies each verified policy update (counting it in `applied`) and
/// acknowledges it on `control.policy.ack.v1`, signed with the builder's signing key (SPEC 3c
/// headers). A failed acknowledgement is a handler failure: retried, then dead-lettered.
pub async fn agent(builder: MeshBuilder, applied: Arc<AtomicU64>) -> Result<Role, MeshError> {
    let group = builder.config().shared_group();
    let instance = format!("agent-{}", builder.config().node_id);
    let mut role = Role::producing(builder.requiring_signer("agent")?).await?;
    let out = role.producer().clone();
    let consumer = role
        .mesh
        .consumer(group)?
        .on(move |r: Verified<PolicyUpdateEvent>| {
            let (out, applied, instance) = (out.clone(), applied.clone(), instance.clone());
            async move {
                applied.fetch_add(1, Ordering::Relaxed);
                let now = SystemClock.now_secs();
                let ack = PolicyAckEvent {
                    policy_id: r.message.policy_id,
                    result: "applied".into(),
                    applied_at: now,
                    acked_at: now,
                    controller_instance: instance,
                    ..Default::default()
                };
                out.send_policy_ack(ack).await?;
                Ok(())
            }
        });
    role.consume(consumer);
    Ok(role)
}

/// The AI service: publishes `ai.*` records through [`Role::producer`] (signed with the
/// builder's signing key) and reads the backend's commits and the agents' acknowledgements
/// (verified against the verifier's ack keys) into `feedback`.
pub async fn ai_service<F, H>(builder: MeshBuilder, feedback: H) -> Result<Role, MeshError>
where
    F: Future<Output = HandlerResult> + Send + 'static,
    H: SharedHandler<F>,
{
    let group = builder.config().shared_group();
    let mut role = Role::producing(builder.requiring_signer("ai_service")?).await?;
    let consumer = role
        .mesh
        .consumer(group)?
        .handle(Kind::Commit, feedback.clone())
        .handle(Kind::PolicyAck, feedback);
    role.consume(consumer);
    Ok(role)
}

/// The backend: publishes commits, policy updates, reputation and evidence requests through
/// [`Role::producer`], signed with the builder's signing key; consumes nothing here.
pub async fn backend(builder: MeshBuilder) -> Result<Role, MeshError> {
    Role::producing(builder.requiring_signer("backend")?).await
}
