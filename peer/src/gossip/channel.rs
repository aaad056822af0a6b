//! Gossip of one channel: membership view, leadership, the commit loop fed by push and pull,
//! pushing committed blocks and serving pull requests.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use rand::seq::SliceRandom as _;
use shared_proto::dial::Dialer;
use shared_proto::hash::Hash;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::GossipSettings;
use shared_proto::pb::common::Block;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::AliveInfo;
use shared_proto::pb::peer::GossipMessage;
use shared_proto::pb::peer::StateRequest;
use shared_proto::pb::peer::StateResponse;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::sync::Notify;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::alive;
use super::alive::VerifiedAlive;
use super::election;
use super::membership::Member;
use super::membership::Membership;
use super::membership::Observed;
use super::reorder::Incoming;
use super::reorder::ReorderBuffer;
use super::reorder::Source;
use super::Shared;
use crate::channels::Fatal;
use crate::commit::CommitError;
use crate::commit::Committer;
use crate::deliver_client;
use crate::metrics::Metrics;

/// Blocks from fellow peers waiting for the commit loop.
pub const INBOX_MAX: usize = 256;
/// Reorder buffer bounds.
pub const REORDER_BLOCKS_MAX: u64 = 1024;
pub const REORDER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A pull request unanswered for this long is given up.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of blocks in one state response (at least one block is always sent).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Blocks in one state response, whatever the request asks.
pub const RESPONSE_BLOCKS_MAX: u64 = 512;
/// State requests served at once per channel; more are dropped.
pub const SERVING_MAX: usize = 4;
/// Only the newest blocks are pushed after a jump in height (members pull the rest).
pub const PUSH_WINDOW: u64 = 64;

/// Gossip state of one channel.
#[derive(Debug)]
pub struct ChannelGossip {
    pub committer: Arc<Committer>,
    pub(super) membership: Mutex<Membership>,
    inbox: mpsc::Sender<Incoming>,
    inbox_rx: Mutex<Option<mpsc::Receiver<Incoming>>>,
    pub(super) pull_wake: Notify,
    /// The member asked last (identity), and when; `None` when no request is outstanding.
    pull_in_flight: Mutex<Option<(Hash, Instant)>>,
    /// Next block number to ask for (ahead of the ledger while responses are being committed).
    pull_cursor: AtomicU64,
    leader: watch::Sender<bool>,
    sequence: AtomicU64,
    pub(super) serving: Arc<Semaphore>,
    /// When this peer started gossiping the channel (at node start, or when it joined it).
    started: Instant,
}

impl ChannelGossip {
    pub fn new(committer: Arc<Committer>, settings: &GossipSettings) -> Self {
        let (inbox, inbox_rx) = mpsc::channel(INBOX_MAX);
        ChannelGossip {
            committer,
            membership: Mutex::new(Membership::new(Duration::from_millis(
                settings.alive_expiry_ms,
            ))),
            inbox,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            pull_wake: Notify::new(),
            pull_in_flight: Mutex::new(None),
            pull_cursor: AtomicU64::new(0),
            leader: watch::channel(false).0,
            sequence: AtomicU64::new(0),
            serving: Arc::new(Semaphore::new(SERVING_MAX)),
            started: Instant::now(),
        }
    }

    pub(super) fn id(&self) -> &str {
        self.committer.channel_id()
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.committer.metrics
    }

    pub(super) fn members(&self, now: Instant) -> Vec<Member> {
        self.membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alive(now)
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn alive_endpoints(&self, now: Instant) -> Vec<String> {
        self.members(now).into_iter().map(|m| m.endpoint).collect()
    }

    /// Starts the commit, pull, push and leadership tasks.
    pub fn spawn_tasks(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        identity: Arc<SigningIdentity>,
        dialer: Arc<Dialer>,
        fatal: &Fatal,
    ) -> Vec<JoinHandle<()>> {
        let Some(inbox) = self
            .inbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Vec::new();
        };
        let (me, sh, fatal_commit) = (self.clone(), shared.clone(), fatal.clone());
        let commit = tokio::spawn(async move {
            let e = me.commit_loop(&sh, inbox).await;
            fatal_commit.report(format!("channel {}: {e}", me.id()));
        });
        let (me, sh) = (self.clone(), shared.clone());
        let pull = tokio::spawn(async move { me.pull_loop(&sh).await });
        let (me, sh) = (self.clone(), shared.clone());
        let push = tokio::spawn(async move { me.push_loop(&sh).await });
        let me = self.clone();
        let fatal = fatal.clone();
        let lead = tokio::spawn(async move { me.leader_loop(identity, dialer, fatal).await });
        vec![commit, pull, push, lead]
    }

    /// A signed alive message for this channel.
    pub fn alive_message(&self, shared: &Shared, now: Instant) -> GossipMessage {
        let nanos = shared.now_unix().max(0) as u64 * 1_000_000_000;
        let previous = self.sequence.load(Ordering::Relaxed);
        let sequence = nanos.max(previous + 1);
        self.sequence.store(sequence, Ordering::Relaxed);
        let settings = &shared.settings;
        let info = AliveInfo {
            endpoint: shared.endpoint.clone(),
            identity: shared.identity.serialized().to_vec(),
            height: self.committer.ledger.height(),
            sequence,
            can_lead: settings.orderer_connected && settings.static_leader != Some(false),
            leader: self.is_leader(),
            tls_cert_hash: shared.tls_cert_hash.to_vec(),
            known: self
                .alive_endpoints(now)
                .into_iter()
                .take(alive::KNOWN_MAX)
                .collect(),
            channel_id: self.id().to_owned(),
        };
        GossipMessage {
            channel_id: self.id().to_owned(),
            content: Some(Content::Alive(alive::sign_alive(&shared.identity, &info))),
        }
    }

    /// Heartbeat work: expire members, export gauges, decide leadership.
    pub fn tick(&self, shared: &Shared, now: Instant) {
        let (dead, alive) = {
            let mut m = self.membership.lock().unwrap_or_else(|p| p.into_inner());
            (m.expire(now), m.alive(now))
        };
        for endpoint in dead {
            tracing::info!(channel = %self.id(), member = %endpoint, "gossip member expired");
        }
        let height = self.committer.ledger.height();
        self.check_claims(shared, &alive, height, now);
        let top = alive
            .iter()
            .filter(|m| !m.distrusted(now))
            .map(|m| m.credited(height))
            .max()
            .unwrap_or(0);
        let label = Metrics::channel(self.id());
        let metrics = self.metrics();
        metrics
            .gossip_members_alive
            .get_or_create(&label)
            .set(alive.len() as i64);
        metrics
            .gossip_height_lag
            .get_or_create(&label)
            .set(top.saturating_sub(height) as i64);
        let lead = self.decide(shared, &alive, height, now);
        if lead != self.is_leader() {
            tracing::info!(channel = %self.id(), height, leader = lead, "gossip leadership changed");
            self.leader.send_replace(lead);
        }
        metrics
            .gossip_leader
            .get_or_create(&label)
            .set(i64::from(lead));
    }

    fn decide(&self, shared: &Shared, alive: &[Member], height: u64, now: Instant) -> bool {
        let settings = &shared.settings;
        if !settings.orderer_connected {
            return false;
        }
        if let Some(fixed) = settings.static_leader {
            return fixed;
        }
        // Nobody can tell a leader is absent before one expiry has passed: hear the members
        // first (a restarted or new peer, or one that just joined the channel, must not grab
        // the org from a live leader).
        let grace = (shared.heartbeat() * 3).max(Duration::from_millis(settings.alive_expiry_ms));
        if !settings.bootstrap.is_empty()
            && now.saturating_duration_since(self.started) < grace
            && !self.is_leader()
        {
            return false;
        }
        // Claims count for what they have shown: a member is credited with no more height than
        // it proved (or this peer has); a member whose claim failed takes no part; a claim far
        // ahead that is still being checked counts for no leadership, and while one is being
        // checked this peer does not take leadership either (it may be the one far behind).
        let lag = settings.election_lag_blocks;
        let mut checking = false;
        let mut candidates: Vec<election::Candidate<'_>> = alive
            .iter()
            .filter(|m| m.can_lead && !m.distrusted(now))
            .map(|m| {
                let unverified = m.unverified(height, lag);
                checking |= unverified;
                election::Candidate {
                    id: &m.endpoint,
                    height: m.credited(height),
                    claims: m.leader && !unverified,
                }
            })
            .collect();
        if checking && !self.is_leader() {
            return false;
        }
        candidates.push(election::Candidate {
            id: &shared.endpoint,
            height,
            claims: self.is_leader(),
        });
        election::leader(&candidates, lag) == Some(&shared.endpoint)
    }

    pub fn on_alive(&self, shared: &Shared, alive: &VerifiedAlive) {
        if alive.info.endpoint == shared.endpoint {
            return;
        }
        let observed = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&alive.info, alive.identity_id, Instant::now());
        match observed {
            Observed::Joined => {
                tracing::info!(channel = %self.id(), member = %alive.info.endpoint, height = alive.info.height, "gossip member joined")
            }
            Observed::Full => self.metrics().gossip_drop("membership_full"),
            Observed::Refreshed | Observed::Stale => {}
        }
        // Readiness believes a claim only as far as it is credited (plus the election lag).
        let own = self.committer.ledger.height();
        let credible = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&alive.identity_id)
            .map_or(own, |m| {
                m.height.min(
                    m.proven
                        .max(own)
                        .saturating_add(shared.settings.election_lag_blocks),
                )
            });
        if let Some(last) = credible.checked_sub(1) {
            self.committer.saw_block(last);
        }
        if alive.info.height > self.committer.ledger.height() {
            self.pull_wake.notify_one();
        }
    }

    pub fn on_block(&self, shared: &Shared, sender: [u8; 32], block: Block, source: Source) {
        let number = block.header.as_ref().map_or(0, |h| h.number);
        if number < self.committer.ledger.height() {
            shared.metrics.gossip_drop("stale_block");
            return;
        }
        if source == Source::Push
            && shared_proto::mutants::active(
                shared_proto::mutants::Mutant::GossipRelaysBeforeVerifying,
            )
        {
            self.relay_unverified(shared, number, &block);
        }
        let incoming = Incoming {
            block,
            source,
            sender,
        };
        if self.inbox.try_send(incoming).is_err() {
            shared.metrics.gossip_drop("inbox_full");
        }
    }

    /// Up to `fanout` random members that may lack block `number`.
    fn push_targets(&self, shared: &Shared, number: u64) -> Vec<String> {
        let mut lacking: Vec<String> = self
            .members(Instant::now())
            .into_iter()
            .filter(|m| m.height <= number)
            .map(|m| m.endpoint)
            .collect();
        lacking.shuffle(&mut rand::thread_rng());
        lacking.truncate(shared.settings.fanout);
        lacking
    }

    /// Planted bug `gossip_relays_before_verifying`: passes a pushed block on to `fanout`
    /// members that may lack it before this peer has checked it.
    fn relay_unverified(&self, shared: &Shared, number: u64, block: &Block) {
        let lacking = self.push_targets(shared, number);
        let message = GossipMessage {
            channel_id: self.id().to_owned(),
            content: Some(Content::Block(block.clone())),
        };
        for target in lacking {
            let _ = shared.outbound.send(&target, message.clone());
        }
    }

    pub async fn on_state_response(
        &self,
        shared: &Shared,
        identity: Hash,
        sender: Hash,
        response: StateResponse,
    ) {
        if self.settle_probe(shared, identity, sender, &response).await {
            return;
        }
        let was_asked = {
            let mut in_flight = self
                .pull_in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let asked = in_flight
                .as_ref()
                .is_some_and(|(asked, _)| *asked == identity);
            if asked {
                *in_flight = None;
            }
            asked
        };
        if was_asked && response.blocks.is_empty() {
            // Asked only because it claimed to be ahead: it has nothing of what it claimed.
            self.distrust(shared, &identity, "answered a pull with nothing");
        }
        let height = self.committer.ledger.height();
        for block in response
            .blocks
            .into_iter()
            .take(RESPONSE_BLOCKS_MAX as usize)
        {
            let number = block.header.as_ref().map_or(0, |h| h.number);
            if number < height {
                continue;
            }
            self.pull_cursor.fetch_max(number + 1, Ordering::Relaxed);
            let incoming = Incoming {
                block,
                source: Source::Pull,
                sender,
            };
            // Waiting here slows this sender's stream down instead of dropping what we asked for.
            if self.inbox.send(incoming).await.is_err() {
                shared.metrics.gossip_drop("inbox_closed");
                return;
            }
        }
        self.pull_wake.notify_one();
    }

    /// Takes blocks from fellow peers, reorders them and commits each through the committer.
    /// Returns only when storage failed.
    async fn commit_loop(
        &self,
        shared: &Shared,
        mut inbox: mpsc::Receiver<Incoming>,
    ) -> CommitError {
        let mut buffer = ReorderBuffer::new(REORDER_BLOCKS_MAX, REORDER_BYTES_MAX);
        let mut height_rx = self.committer.ledger.subscribe_height();
        loop {
            tokio::select! {
                incoming = inbox.recv() => {
                    let Some(incoming) = incoming else { return std::future::pending().await };
                    if shared.is_banned(&incoming.sender) {
                        shared.metrics.gossip_drop("banned_sender_buffered");
                    } else if let Err(r) = buffer.insert(incoming, self.committer.ledger.height()) {
                        shared.metrics.gossip_drop(r.as_str());
                    }
                }
                changed = height_rx.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
            if let Err(e) = self.commit_buffered(shared, &mut buffer).await {
                return e;
            }
            if !buffer.is_empty() {
                self.pull_wake.notify_one();
            }
        }
    }

    /// Asks a member that is ahead for the next batch, every interval or when woken.
    async fn pull_loop(&self, shared: &Shared) {
        let interval = Duration::from_millis(shared.settings.pull_interval_ms);
        let batch = shared.settings.pull_batch_blocks;
        let mut progress = (self.committer.ledger.height(), Instant::now());
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.pull_wake.notified() => {}
            }
            let now = Instant::now();
            let height = self.committer.ledger.height();
            if height > progress.0 {
                progress = (height, now);
            }
            {
                let mut in_flight = self
                    .pull_in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match *in_flight {
                    Some((_, at)) if now.saturating_duration_since(at) < PULL_TIMEOUT => continue,
                    Some(_) => {
                        shared.metrics.gossip_drop("pull_timeout");
                        *in_flight = None;
                    }
                    None => {}
                }
            }
            // Blocks asked for earlier may still be on their way to the ledger; ask from the
            // cursor, unless nothing moved for a while (a block was lost: ask again).
            let mut start = self.pull_cursor.load(Ordering::Relaxed).max(height);
            if start > height
                && now.saturating_duration_since(progress.1) > interval.max(PULL_TIMEOUT / 5)
            {
                start = height;
                self.pull_cursor.store(height, Ordering::Relaxed);
            }
            if start >= height + REORDER_BLOCKS_MAX - batch.min(REORDER_BLOCKS_MAX) {
                continue;
            }
            let target = {
                let ahead: Vec<Member> = self
                    .members(now)
                    .into_iter()
                    .filter(|m| m.height > start && !m.distrusted(now))
                    .collect();
                ahead.choose(&mut rand::thread_rng()).cloned()
            };
            let Some(target) = target else { continue };
            let end = (start + batch - 1).min(target.height - 1);
            let message = GossipMessage {
                channel_id: self.id().to_owned(),
                content: Some(Content::StateRequest(StateRequest { start, end })),
            };
            if shared.outbound.send(&target.endpoint, message) {
                shared.metrics.gossip_pull_requests.inc();
                *self
                    .pull_in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((target.identity_id, now));
            }
        }
    }

    /// Pushes each newly committed block to `fanout` random members that may lack it.
    async fn push_loop(&self, shared: &Shared) {
        let mut height_rx = self.committer.ledger.subscribe_height();
        let mut pushed = self.committer.ledger.height();
        loop {
            if height_rx.changed().await.is_err() {
                return;
            }
            let height = *height_rx.borrow_and_update();
            for number in pushed.max(height.saturating_sub(PUSH_WINDOW))..height {
                let targets = self.push_targets(shared, number);
                if targets.is_empty() {
                    continue;
                }
                let ledger = self.committer.ledger.clone();
                let block = match tokio::task::spawn_blocking(move || ledger.block(number)).await {
                    Ok(Ok(Some(block))) => block,
                    _ => continue,
                };
                let message = GossipMessage {
                    channel_id: self.id().to_owned(),
                    content: Some(Content::Block(block)),
                };
                for target in targets {
                    if !shared.outbound.send(&target, message.clone()) {
                        shared.metrics.gossip_drop("queue_full");
                    }
                }
            }
            pushed = pushed.max(height);
        }
    }

    /// Runs the deliver client while this peer leads the channel.
    async fn leader_loop(
        self: Arc<Self>,
        identity: Arc<SigningIdentity>,
        dialer: Arc<Dialer>,
        fatal: Fatal,
    ) {
        let mut leader_rx = self.leader.subscribe();
        let mut deliver: Option<AbortOnDrop> = None;
        loop {
            let lead = *leader_rx.borrow_and_update();
            if lead && deliver.is_none() {
                let (committer, identity, dialer, fatal) = (
                    self.committer.clone(),
                    identity.clone(),
                    dialer.clone(),
                    fatal.clone(),
                );
                let id = self.id().to_owned();
                deliver = Some(AbortOnDrop(tokio::spawn(async move {
                    let e = deliver_client::run(
                        committer,
                        identity,
                        dialer,
                        crate::channels::system_clock,
                    )
                    .await;
                    fatal.report(format!("channel {id}: {e}"));
                })));
            } else if !lead {
                deliver = None;
            }
            if leader_rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Aborts the task when dropped (so the deliver client stops with its leadership or node).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
