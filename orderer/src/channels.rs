//! The channels this node serves: per channel its checked config, Raft group, block store,
//! proposer and state-machine status. Services look channels up here.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shared_proto::channel::Channel;
use tokio::sync::watch;

use crate::block_store::BlockStore;
use crate::broadcast::InFlightBytes;
use crate::consensus::proposer::Proposer;
use crate::consensus::rejoin::Rejoin;
use crate::consensus::state_machine::SmStatus;
use crate::consensus::NodeId;
use crate::consensus::Raft;
use crate::cutter::BatchLimits;
use crate::metrics::Metrics;

/// One channel as this node runs it.
pub struct ChannelRuntime {
    pub id: String,
    /// The config in force (it changes when a config block is applied).
    pub config: watch::Receiver<Arc<Channel>>,
    pub raft: Raft,
    pub store: BlockStore,
    pub proposer: Proposer,
    pub status: watch::Receiver<SmStatus>,
    /// How this node's Raft for the channel started, and whether it may vote yet.
    pub rejoin: Rejoin,
    /// When each other member last answered this node's Raft messages.
    pub liveness: Arc<crate::membership::Liveness>,
    /// Whether this node, as a follower, has applied what the leader had committed when it
    /// first heard from it (readiness after a restart or a join).
    pub catch_up: CatchUp,
    /// 0 while this node is a consenter; else 1 + the config sequence that removed it.
    removed: std::sync::atomic::AtomicU64,
    /// The channel's tasks (timer, membership, catch-up, ...), ended when it stops.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set when the channel is being stopped on purpose (node stop, channel removed).
    stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ChannelRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRuntime")
            .field("id", &self.id)
            .field("height", &self.store.height())
            .finish_non_exhaustive()
    }
}

/// A follower's catch-up target: the number of Raft entries the leader had committed in the
/// first append-entries (or heartbeat) this node received after it started. Until it has
/// applied that many, it is behind the cluster by what it missed while down, whatever its own
/// log says; after that it keeps pace or Raft reports the problem (no leader).
#[derive(Debug, Default)]
pub struct CatchUp {
    /// 0 until a leader's commit index is heard; else 1 + the entries to apply.
    target: AtomicU64,
    reached: std::sync::atomic::AtomicBool,
}

impl CatchUp {
    /// Records the commit index of an append-entries from a leader (the first one counts).
    pub fn observe_leader_commit(&self, committed: Option<u64>) {
        let entries = committed.map_or(0, |index| index + 1);
        let _ = self
            .target
            .compare_exchange(0, entries + 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why this follower is not caught up with `applied` entries applied; `None` once it has
    /// been (it then stays caught up).
    pub fn not_caught_up(&self, applied: u64) -> Option<String> {
        if self.reached.load(Ordering::SeqCst) {
            return None;
        }
        match self.target.load(Ordering::SeqCst) {
            0 => Some("has not yet heard the leader's commit index".to_owned()),
            target if applied >= target - 1 => {
                self.reached.store(true, Ordering::SeqCst);
                None
            }
            target => Some(format!(
                "catching up: applied {applied} of the {} Raft entries the leader had \
                 committed when this node started following it",
                target - 1
            )),
        }
    }
}

impl ChannelRuntime {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        config: watch::Receiver<Arc<Channel>>,
        raft: Raft,
        store: BlockStore,
        proposer: Proposer,
        status: watch::Receiver<SmStatus>,
        rejoin: Rejoin,
        liveness: Arc<crate::membership::Liveness>,
    ) -> Self {
        ChannelRuntime {
            id,
            config,
            raft,
            store,
            proposer,
            status,
            rejoin,
            liveness,
            catch_up: CatchUp::default(),
            removed: 0.into(),
            tasks: Default::default(),
            stopping: false.into(),
        }
    }

    /// Hands the channel its tasks; [`ChannelRuntime::abort_tasks`] ends them.
    pub fn own_tasks(&self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
    }

    pub fn abort_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Records that a config update removed this node from the consenters.
    pub fn mark_removed(&self, sequence: u64) {
        self.removed.store(sequence + 1, Ordering::SeqCst);
    }

    /// The config sequence that removed this node from the consenters, if one did.
    pub fn removed_at(&self) -> Option<u64> {
        self.removed.load(Ordering::SeqCst).checked_sub(1)
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Channel> {
        self.config.borrow().clone()
    }

    /// Batch limits of the config in force.
    pub fn limits(&self) -> BatchLimits {
        BatchLimits::from_config(&self.config().batch_size())
    }

    /// Whether `cert_der` is the client TLS certificate of a consenter of this channel.
    pub fn is_pinned_consenter(&self, cert_der: &[u8]) -> bool {
        self.config()
            .consenters()
            .iter()
            .any(|c| c.client_tls_cert == cert_der)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

/// Every channel of the node (they come and go while it runs), plus what services share.
#[derive(Debug)]
pub struct Registry {
    pub node_id: NodeId,
    channels: std::sync::RwLock<BTreeMap<String, Arc<ChannelRuntime>>>,
    pub metrics: Arc<Metrics>,
    /// Current time in Unix seconds (injected so tests can move it).
    pub clock: fn() -> i64,
    /// Bytes of envelopes in progress on this node (every channel).
    pub in_flight: InFlightBytes,
    /// Seconds added to `clock`: 0 in production; tests move one node's time with it (e.g.
    /// past a client certificate's expiry).
    pub clock_skew_secs: AtomicI64,
    /// Why a channel's Raft stopped on its own, if one did (the node must then stop).
    fatal: watch::Sender<Option<String>>,
    /// `/readyz` fails when any channel is not ready (default: only when none is).
    pub ready_requires_every_channel: bool,
    /// This node's TLS certificate (DER), to tell when its consenter entry pins another one
    /// (empty: not checked).
    pub own_tls_cert: Vec<u8>,
    /// Broadcast's creator signatures, verified in batches across every stream.
    pub signatures: crate::broadcast::signatures::SignatureBatcher,
}

impl Registry {
    pub fn new(node_id: NodeId, metrics: Arc<Metrics>) -> Self {
        Registry {
            node_id,
            channels: Default::default(),
            metrics: metrics.clone(),
            clock: system_clock,
            in_flight: Default::default(),
            clock_skew_secs: 0.into(),
            fatal: watch::Sender::new(None),
            ready_requires_every_channel: false,
            own_tls_cert: Vec::new(),
            signatures: crate::broadcast::signatures::SignatureBatcher::new(
                metrics.broadcast_signatures.clone(),
                metrics.broadcast_signature_batches.clone(),
            ),
        }
    }

    pub fn get(&self, channel_id: &str) -> Option<Arc<ChannelRuntime>> {
        self.read().get(channel_id).cloned()
    }

    /// The channels served now, by id.
    pub fn channels(&self) -> Vec<Arc<ChannelRuntime>> {
        self.read().values().cloned().collect()
    }

    pub fn insert(&self, channel: Arc<ChannelRuntime>) {
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.id.clone(), channel);
    }

    pub fn remove(&self, channel_id: &str) -> Option<Arc<ChannelRuntime>> {
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel_id)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<ChannelRuntime>>> {
        self.channels.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a channel's Raft stopped on its own; the node stops.
    pub fn report_fatal(&self, reason: String) {
        self.fatal.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Completes with the first fatal reason reported.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    pub fn now_unix(&self) -> i64 {
        (self.clock)().saturating_add(self.clock_skew_secs.load(Ordering::Relaxed))
    }
}

pub use shared_proto::system_clock;
