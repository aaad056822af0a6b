//! Checking what members claim (gossip of one channel): a member that says it is far ahead is
//! asked for the last block it claims; the block must carry valid orderer signatures
//! (BlockValidation) for the claim to be credited. A member whose probe goes unanswered,
//! answers without the block, answers a pull with nothing, or serves a block that does not
//! verify is distrusted for [`DISTRUST`]: it takes no part in the election and is not pulled
//! from.

use std::time::Duration;
use std::time::Instant;

use shared_proto::block;
use shared_proto::block::Expected;
use shared_proto::hash::Hash;
use shared_proto::msp::ANY_TIME;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::GossipMessage;
use shared_proto::pb::peer::StateRequest;
use shared_proto::pb::peer::StateResponse;

use super::channel::ChannelGossip;
use super::channel::PULL_TIMEOUT;
use super::membership::Member;
use super::Shared;

/// How long a member whose claim failed is ignored.
pub const DISTRUST: Duration = super::BAN_DURATION;

impl ChannelGossip {
    /// Heartbeat: asks each member whose claim is unverified for its last claimed block, and
    /// distrusts those whose probe went unanswered.
    pub(super) fn check_claims(&self, shared: &Shared, alive: &[Member], own: u64, now: Instant) {
        let lag = shared.settings.election_lag_blocks;
        let overdue = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .probes_overdue(now, PULL_TIMEOUT);
        for identity in overdue {
            self.distrust(shared, &identity, "did not prove its claimed height");
        }
        for m in alive {
            if m.distrusted(now) || m.probe.is_some() || !m.unverified(own, lag) {
                continue;
            }
            let last = m.height - 1;
            let message = GossipMessage {
                channel_id: self.id().to_owned(),
                content: Some(Content::StateRequest(StateRequest {
                    start: last,
                    end: last,
                })),
            };
            if shared.outbound.send(&m.endpoint, message) {
                self.membership
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .start_probe(&m.identity_id, m.height, now);
            }
        }
    }

    /// Settles the probe of the member `identity` if `response` answers it; true when the
    /// response was that answer (it is not fed to the commit path: the block lies ahead).
    pub(super) async fn settle_probe(
        &self,
        shared: &Shared,
        identity: Hash,
        sender: Hash,
        response: &StateResponse,
    ) -> bool {
        let probe = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&identity)
            .and_then(|m| m.probe);
        let Some((height, _)) = probe else {
            return false;
        };
        let last = height - 1;
        let answer = match response.blocks.as_slice() {
            [] => {
                self.distrust(shared, &identity, "has none of the blocks it claims");
                return true;
            }
            [only] if only.header.as_ref().is_some_and(|h| h.number == last) => only.clone(),
            // An answer to a pull, not to the probe.
            _ => return false,
        };
        let channel = self.committer.config();
        let expected = Expected {
            number: last,
            previous_hash: None,
        };
        let verified = tokio::task::spawn_blocking(move || {
            block::verify_block(&channel, &answer, expected, ANY_TIME)
        })
        .await;
        match verified {
            Ok(Ok(_)) => {
                self.membership
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .prove(&identity, height);
                self.committer.saw_block(last);
            }
            Ok(Err(e)) => {
                tracing::warn!(channel = %self.id(), error = %e, "a member proved its height with a block that does not verify");
                shared.strike(&sender);
                self.distrust(shared, &identity, "served a block that does not verify");
            }
            Err(_) => {}
        }
        true
    }

    /// A claim of the member `identity` failed.
    pub(super) fn distrust(&self, shared: &Shared, identity: &Hash, why: &str) {
        let until = Instant::now() + DISTRUST;
        let mut membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = membership.get(identity) {
            tracing::warn!(channel = %self.id(), member = %m.endpoint, claimed = m.height, why, "gossip member distrusted");
        }
        membership.distrust(identity, until);
        drop(membership);
        shared.metrics.gossip_drop("claim_failed");
        self.pull_wake.notify_one();
    }
}
