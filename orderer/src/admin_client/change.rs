//! Config changes from the operator's side: build the next config (sequence + 1), have every
//! org admin of the material approve it, submit it to any orderer until one answers, and wait
//! until the leader reports the new sequence and the voters the new config names.
//!
//! | Submit answer (per orderer)                 | the client                                 |
//! |---------------------------------------------|--------------------------------------------|
//! | SUCCESS                                     | waits for the leader's view                 |
//! | UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND…  | tries the next orderer, until the deadline |
//! | ALREADY_EXISTS                              | an earlier attempt was ordered: waits      |
//! | FAILED_PRECONDITION after a lost answer     | ordered already if the config in force is this one; else a refusal |
//! | anything else                               | fails with the orderer's status and message |

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use serde::Serialize;
use shared_proto::channel::Channel;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::config::ChannelConfig;
use shared_proto::pb::orderer::ClusterStatusResponse;

use super::material::Network;
use super::material::OrdererNode;
use super::now_unix_ms;
use super::rpc::CurrentConfig;
use super::AdminClientError;

/// Pause between rounds of submitting or polling.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Deadline of one status poll of one node while waiting.
const POLL_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A consenter change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsenterOp {
    /// The node's entry from its material joins the consenters.
    Add,
    /// The node's entry leaves the consenters.
    Remove,
    /// The node's entry is rebuilt from its current files (a renewed certificate, a move).
    Replace,
}

impl ConsenterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsenterOp::Add => "add",
            ConsenterOp::Remove => "remove",
            ConsenterOp::Replace => "replace",
        }
    }
}

/// A channel's Raft membership as one node reports it, with node names from the material
/// (`orderer admin status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub channel: String,
    /// `null` when the node knows no leader.
    pub leader: Option<String>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub height: u64,
    pub config_sequence: u64,
}

impl StatusView {
    pub fn new(net: &Network, s: &ClusterStatusResponse) -> Self {
        StatusView {
            channel: s.channel_id.clone(),
            leader: (s.leader_id != 0).then(|| net.name_of(s.leader_id)),
            voters: s.voters.iter().map(|id| net.name_of(*id)).collect(),
            learners: s.learners.iter().map(|id| net.name_of(*id)).collect(),
            height: s.height,
            config_sequence: s.config_sequence,
        }
    }
}

/// What a config change did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub channel: String,
    pub previous_sequence: u64,
    pub config_sequence: u64,
    pub tx_id: String,
    /// The orderer that ordered it.
    pub submitted_to: String,
    /// The leader's view once the change was carried out.
    pub status: StatusView,
    pub elapsed_ms: u64,
}

impl Network {
    /// The config in force on `channel` with the highest sequence any orderer of the network
    /// delivers (each asked at once; a node that is down or lacks the channel is skipped).
    pub async fn current_config(&self, channel: &str) -> Result<CurrentConfig, AdminClientError> {
        let answers =
            futures::future::join_all(self.orderers.iter().map(|o| self.latest_config(o, channel)))
                .await;
        let mut best: Option<CurrentConfig> = None;
        let mut tried = Vec::new();
        for (node, answer) in self.orderers.iter().zip(answers) {
            match answer {
                Ok(c)
                    if best
                        .as_ref()
                        .is_none_or(|b| c.channel.sequence() > b.channel.sequence()) =>
                {
                    best = Some(c)
                }
                Ok(_) => {}
                Err(e) => tried.push(format!("{}: {e}", node.name)),
            }
        }
        best.ok_or_else(|| AdminClientError::NoneAnswered {
            what: format!("Deliver of channel {channel:?}"),
            tried: tried.join("\n  "),
        })
    }

    /// The next config of `current` with `name`'s consenter entry added, removed or rebuilt
    /// from its files.
    pub fn consenter_change(
        &self,
        current: &Channel,
        op: ConsenterOp,
        name: &str,
    ) -> Result<ChannelConfig, AdminClientError> {
        let node = self.orderer(name)?;
        let mut next = current.config().clone();
        next.sequence += 1;
        let consenters = &mut next.orderer.get_or_insert_with(Default::default).consenters;
        let position = consenters.iter().position(|c| c.id == node.node_id);
        let channel = current.id();
        match (op, position) {
            (ConsenterOp::Add, Some(_)) => {
                return Err(AdminClientError::Change(format!(
                    "{name} (node id {}) is already a consenter of channel {channel:?}; use \
                     `consenter replace` to update its entry",
                    node.node_id
                )))
            }
            (ConsenterOp::Remove | ConsenterOp::Replace, None) => {
                return Err(AdminClientError::Change(format!(
                    "{name} (node id {}) is not a consenter of channel {channel:?} (consenters: {})",
                    node.node_id,
                    self.consenter_names(current)
                )))
            }
            (ConsenterOp::Add, None) => consenters.push(self.consenter_entry(node)?),
            (ConsenterOp::Remove, Some(i)) => {
                consenters.remove(i);
            }
            (ConsenterOp::Replace, Some(i)) => {
                let entry = self.consenter_entry(node)?;
                if consenters[i] == entry {
                    return Err(AdminClientError::Change(format!(
                        "{name}'s consenter entry on channel {channel:?} already matches its \
                         files (address {}:{}, same certificates): nothing to replace",
                        entry.host, entry.port
                    )));
                }
                consenters[i] = entry;
            }
        }
        Ok(next)
    }

    fn consenter_names(&self, channel: &Channel) -> String {
        let names: Vec<String> = channel
            .consenters()
            .iter()
            .map(|c| self.name_of(c.id))
            .collect();
        names.join(", ")
    }

    /// Has `next` approved by every org admin of the material that the current config knows,
    /// submits it (to the leader first), waits for the leader to report it (and `joining`, a
    /// node being added, to report itself a consenter), and says what happened. Fails after
    /// `timeout`.
    pub async fn apply(
        &self,
        current: &CurrentConfig,
        next: &ChannelConfig,
        joining: Option<&str>,
        timeout: Duration,
    ) -> Result<Applied, AdminClientError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let channel = current.channel.id().to_owned();
        let orgs: Vec<String> = current
            .channel
            .application_orgs()
            .iter()
            .chain(current.channel.orderer_orgs())
            .cloned()
            .collect();
        let admins = self.admins_of(&orgs)?;
        let submitter = self.admin(
            current
                .channel
                .orderer_orgs()
                .first()
                .map_or(admins[0].msp_id.as_str(), String::as_str),
        )?;
        let signers: Vec<&SigningIdentity> = admins.iter().map(|a| &a.identity).collect();
        let envelope = shared_proto::config_update::build_update(
            next,
            &signers,
            &submitter.identity,
            now_unix_ms(),
        );
        let tx_id = crate::block_store::tx_id_of(&prost::Message::encode_to_vec(&envelope))
            .unwrap_or_default();
        let submitted_to = self
            .submit_until_ordered(&current.channel, next, envelope, deadline)
            .await?;
        let status = self.wait_applied(next, joining, deadline, timeout).await?;
        Ok(Applied {
            channel,
            previous_sequence: current.channel.sequence(),
            config_sequence: next.sequence,
            tx_id,
            submitted_to,
            status,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The orderers to submit to: the leader (its refusals carry their exact status; a
    /// follower relays them as INVALID_ARGUMENT), the other consenters, then the rest.
    async fn submit_order(&self, channel: &Channel) -> Vec<&OrdererNode> {
        let statuses = futures::future::join_all(self.orderers.iter().map(|o| async move {
            tokio::time::timeout(POLL_CALL_TIMEOUT, self.cluster_status(o, channel.id())).await
        }))
        .await;
        let leader = statuses
            .into_iter()
            .filter_map(|s| s.ok()?.ok())
            .find(|s| s.leader_id != 0)
            .map(|s| s.leader_id);
        let consenters: BTreeSet<u64> = channel.consenters().iter().map(|c| c.id).collect();
        let mut order: Vec<&OrdererNode> = self.orderers.iter().collect();
        order.sort_by_key(|o| (Some(o.node_id) != leader, !consenters.contains(&o.node_id)));
        order
    }

    /// Submits `envelope` (the update to `next`) until an orderer orders it; the name of that
    /// orderer.
    async fn submit_until_ordered(
        &self,
        current: &Channel,
        next: &ChannelConfig,
        envelope: shared_proto::pb::common::Envelope,
        deadline: Instant,
    ) -> Result<String, AdminClientError> {
        use tonic::Code;
        let order = self.submit_order(current).await;
        let mut last: Vec<String> = Vec::new();
        let mut maybe_ordered = false;
        loop {
            last.clear();
            for node in &order {
                if Instant::now() >= deadline {
                    break;
                }
                match self.submit(node, envelope.clone()).await {
                    Ok(_) => return Ok(node.name.clone()),
                    Err(e) => match e.code() {
                        Some(Code::AlreadyExists) => return Ok(node.name.clone()),
                        Some(Code::FailedPrecondition) if maybe_ordered => {
                            // An earlier attempt may have been ordered before its answer was
                            // lost: then the config in force is `next` itself.
                            match self.latest_config(node, &next.channel_id).await {
                                Ok(now) if now.channel.config() == next => {
                                    return Ok(node.name.clone())
                                }
                                _ => return Err(e),
                            }
                        }
                        Some(
                            Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Cancelled
                            | Code::Unknown
                            | Code::Aborted
                            | Code::ResourceExhausted,
                        ) => {
                            maybe_ordered = true;
                            last.push(format!("{}: {e}", node.name));
                        }
                        // This node does not serve the channel (yet): another may.
                        Some(Code::NotFound) => last.push(format!("{}: {e}", node.name)),
                        _ => return Err(e),
                    },
                }
            }
            if Instant::now() + POLL_EVERY >= deadline {
                return Err(AdminClientError::NoneAnswered {
                    what: format!(
                        "the config update of channel {:?} before the deadline",
                        next.channel_id
                    ),
                    tried: last.join("\n  "),
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until a node that leads the channel reports a config sequence of at least
    /// `next`'s, the consenters of `next` as its voters and no learners, and `joining` (if
    /// any) reports itself a consenter at that sequence. A `joining` node that reports
    /// `removed` never gets there (its Raft for the channel stopped): that fails at once.
    async fn wait_applied(
        &self,
        next: &ChannelConfig,
        joining: Option<&str>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<StatusView, AdminClientError> {
        let want: BTreeSet<u64> = next
            .orderer
            .as_ref()
            .map(|o| o.consenters.iter().map(|c| c.id).collect())
            .unwrap_or_default();
        let channel = next.channel_id.as_str();
        let mut seen: Vec<String>;
        loop {
            let answers = futures::future::join_all(self.orderers.iter().map(|o| async move {
                tokio::time::timeout(POLL_CALL_TIMEOUT, self.cluster_status(o, channel)).await
            }))
            .await;
            seen = Vec::new();
            let mut leader_view = None;
            let mut joined = joining.is_none();
            for (node, answer) in self.orderers.iter().zip(answers) {
                match answer {
                    Ok(Ok(s)) => {
                        let voters: BTreeSet<u64> = s.voters.iter().copied().collect();
                        let leads = s.leader_id == s.node_id && s.role == "consenter";
                        if leads
                            && s.config_sequence >= next.sequence
                            && voters == want
                            && s.learners.is_empty()
                        {
                            leader_view = Some(StatusView::new(self, &s));
                        }
                        if joining == Some(node.name.as_str()) {
                            if s.role == "removed" {
                                return Err(AdminClientError::Change(format!(
                                    "config sequence {} names {name} again, but {name} reports \
                                     role removed at config sequence {}: a node removed from a \
                                     channel stops its Raft for it and does not start it again \
                                     when a later config names it. Restart {name} (it keeps its \
                                     data): it then catches up and is promoted",
                                    next.sequence,
                                    s.config_sequence,
                                    name = node.name
                                )));
                            }
                            joined = s.role == "consenter" && s.config_sequence >= next.sequence;
                        }
                        let v = StatusView::new(self, &s);
                        seen.push(format!(
                            "{}: role {}, leader {}, voters [{}], learners [{}], config sequence {}",
                            node.name,
                            s.role,
                            v.leader.as_deref().unwrap_or("none"),
                            v.voters.join(", "),
                            v.learners.join(", "),
                            s.config_sequence
                        ));
                    }
                    Ok(Err(e)) => seen.push(format!("{}: {e}", node.name)),
                    Err(_) => seen.push(format!(
                        "{}: no status within {} s",
                        node.name,
                        POLL_CALL_TIMEOUT.as_secs()
                    )),
                }
            }
            if let (Some(view), true) = (&leader_view, joined) {
                return Ok(view.clone());
            }
            if Instant::now() + POLL_EVERY >= deadline {
                let names: Vec<String> = want.iter().map(|id| self.name_of(*id)).collect();
                return Err(AdminClientError::Timeout {
                    what: format!(
                        "a leader of channel {channel:?} at config sequence {} with voters [{}] \
                         and no learners{}",
                        next.sequence,
                        names.join(", "),
                        joining.map_or(String::new(), |n| format!(", and {n} a consenter"))
                    ),
                    secs: timeout.as_secs(),
                    seen: seen.join("\n  "),
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}
