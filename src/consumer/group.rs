//! Group membership: finding the coordinator, join and sync (the leader runs the assignor),
//! heartbeats, offset fetch and commit, and leaving. Decisions on error codes live here; the
//! wire calls are in `protocol::group` and `protocol::offsets`.

use super::assignor::Assignor;
use crate::protocol::offsets::TopicPartition;
use crate::protocol::{self, group as wire, offsets, Cluster, Connection};
use crate::transport::{Transport, TransportError};
use kafka_protocol::error::ResponseError as E;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Timing of group membership.
#[derive(Debug, Clone)]
pub struct GroupTiming {
    /// Session timeout: a member silent this long is removed.
    pub session_timeout: Duration,
    /// How long the coordinator waits for members to rejoin.
    pub rebalance_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
}

impl Default for GroupTiming {
    fn default() -> Self {
        GroupTiming {
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// What a heartbeat says about this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still a member of the current generation.
    Stable,
    /// The group is rebalancing: stop, commit and rejoin.
    Rebalance,
}

/// This process's membership in one group.
pub(crate) struct Membership {
    cluster: Cluster,
    transport: Transport,
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) generation: i32,
    coordinator: Option<Arc<Connection>>,
    assignors: Vec<Assignor>,
    timing: GroupTiming,
}

fn group_error(op: &str, code: i16) -> TransportError {
    protocol::api_error(op, code)
}

impl Membership {
    pub(crate) fn new(
        cluster: Cluster,
        transport: Transport,
        group: String,
        assignors: Vec<Assignor>,
        timing: GroupTiming,
    ) -> Self {
        Membership {
            cluster,
            transport,
            group,
            member_id: String::new(),
            generation: -1,
            coordinator: None,
            assignors,
            timing,
        }
    }

    async fn coordinator(&mut self) -> Result<Arc<Connection>, TransportError> {
        if let Some(c) = &self.coordinator {
            return Ok(c.clone());
        }
        let boot = self.cluster.bootstrap().await?;
        let addr = wire::find_coordinator(&boot, &self.group).await?;
        let conn = if addr == boot.addr() {
            boot
        } else {
            self.cluster.connect(&addr).await?
        };
        self.coordinator = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the coordinator connection (after an error) so the next call finds it again.
    pub(crate) fn reset_coordinator(&mut self) {
        self.coordinator = None;
    }

    fn coordinator_moved(code: i16) -> bool {
        matches!(
            protocol::response_error(code),
            Some(E::NotCoordinator | E::CoordinatorNotAvailable | E::CoordinatorLoadInProgress)
        )
    }

    /// Joins (or rejoins) the group and returns this member's partitions. Returns a retriable
    /// error for the caller to back off on; loops by itself through the normal join dance.
    pub(crate) async fn join(
        &mut self,
        topics: &[String],
    ) -> Result<Vec<TopicPartition>, TransportError> {
        let names: Vec<&str> = self.assignors.iter().map(|a| a.name()).collect();
        for _ in 0..20 {
            let conn = self.coordinator().await?;
            let params = wire::JoinParams {
                group: &self.group,
                member_id: &self.member_id,
                session_timeout: self.timing.session_timeout,
                rebalance_timeout: self.timing.rebalance_timeout,
                topics,
                assignors: &names,
            };
            let resp = match wire::join(&conn, &params).await {
                Ok(r) => r,
                Err(e) => {
                    self.reset_coordinator();
                    return Err(e);
                }
            };
            match protocol::response_error(resp.error_code) {
                None => {}
                Some(E::MemberIdRequired) => {
                    self.member_id = resp.member_id.to_string();
                    continue;
                }
                Some(E::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(E::RebalanceInProgress) => continue,
                _ if Self::coordinator_moved(resp.error_code) => {
                    self.reset_coordinator();
                    return Err(group_error("join group", resp.error_code));
                }
                _ => return Err(group_error("join group", resp.error_code)),
            }
            self.member_id = resp.member_id.to_string();
            self.generation = resp.generation_id;
            let mut assignments = BTreeMap::new();
            if resp.leader == resp.member_id {
                let protocol_name = resp
                    .protocol_name
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                let assignor =
                    Assignor::from_name(&protocol_name).ok_or_else(|| TransportError::Broker {
                        detail: format!("group chose unknown assignor {protocol_name}"),
                        retriable: false,
                    })?;
                let mut members = BTreeMap::new();
                for m in &resp.members {
                    members.insert(
                        m.member_id.to_string(),
                        wire::decode_subscription(&m.metadata)?,
                    );
                }
                let mut counts = BTreeMap::new();
                for ts in members.values() {
                    for t in ts {
                        if !counts.contains_key(t) {
                            counts.insert(t.clone(), self.transport.partitions(t).await?);
                        }
                    }
                }
                assignments = assignor.assign(&members, &counts);
                tracing::info!(group = %self.group, generation = self.generation, assignor = assignor.name(), members = members.len(), "leader assigned partitions");
            }
            let sync = wire::sync(
                &conn,
                &self.group,
                self.generation,
                &self.member_id,
                &assignments,
            )
            .await;
            match sync {
                Err(e) => {
                    self.reset_coordinator();
                    return Err(e);
                }
                Ok(Ok(parts)) => {
                    return Ok(parts
                        .into_iter()
                        .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                        .collect())
                }
                Ok(Err(code)) => match protocol::response_error(code) {
                    Some(E::RebalanceInProgress | E::IllegalGeneration) => continue,
                    Some(E::UnknownMemberId) => {
                        self.member_id.clear();
                        continue;
                    }
                    _ if Self::coordinator_moved(code) => {
                        self.reset_coordinator();
                        return Err(group_error("sync group", code));
                    }
                    _ => return Err(group_error("sync group", code)),
                },
            }
        }
        Err(TransportError::Broker {
            detail: "group kept rebalancing through 20 join attempts".into(),
            retriable: true,
        })
    }

    /// One heartbeat.
    pub(crate) async fn heartbeat(&mut self) -> Result<Heartbeat, TransportError> {
        let conn = self.coordinator().await?;
        let code = match wire::heartbeat(&conn, &self.group, self.generation, &self.member_id).await
        {
            Ok(c) => c,
            Err(e) => {
                self.reset_coordinator();
                return Err(e);
            }
        };
        match protocol::response_error(code) {
            None => Ok(Heartbeat::Stable),
            Some(E::RebalanceInProgress | E::IllegalGeneration) => Ok(Heartbeat::Rebalance),
            Some(E::UnknownMemberId) => {
                self.member_id.clear();
                Ok(Heartbeat::Rebalance)
            }
            _ if Self::coordinator_moved(code) => {
                self.reset_coordinator();
                Err(group_error("heartbeat", code))
            }
            _ => Err(group_error("heartbeat", code)),
        }
    }

    /// The group's committed offsets for `partitions`.
    pub(crate) async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, TransportError> {
        let conn = self.coordinator().await?;
        let r = offsets::fetch(&conn, &self.group, partitions).await;
        if r.is_err() {
            self.reset_coordinator();
        }
        r
    }

    /// Commits `offsets` (next offset to read) for the current generation.
    pub(crate) async fn commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), TransportError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let r = offsets::commit(
            &conn,
            &self.group,
            self.generation,
            &self.member_id,
            offsets,
        )
        .await;
        if r.is_err() {
            self.reset_coordinator();
        }
        r
    }

    /// Leaves the group (best effort: the session timeout removes us otherwise).
    pub(crate) async fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        if let Ok(conn) = self.coordinator().await {
            if let Err(e) = wire::leave(&conn, &self.group, &self.member_id).await {
                tracing::warn!(group = %self.group, error = %e, "leave group failed");
            }
        }
        self.member_id.clear();
    }
}
