//! The channels this peer runs (they come and go while it runs: see [`crate::runtime`]), and
//! what every service shares. Services look a channel up here per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;

use shared_proto::channel::Channel;
use shared_proto::msp::SigningIdentity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chaincode::ChaincodeRegistry;
use crate::commit::Committer;
use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// One channel as this peer runs it.
#[derive(Debug)]
pub struct PeerChannel {
    pub id: String,
    pub ledger: Ledger,
    pub committer: Arc<Committer>,
    /// The channel's tasks (gossip commit, pull, push, leadership and through it the deliver
    /// client), ended when it stops.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerChannel {
    pub fn new(ledger: Ledger, committer: Arc<Committer>) -> Self {
        PeerChannel {
            id: committer.channel_id().to_owned(),
            ledger,
            committer,
            tasks: Mutex::default(),
        }
    }

    /// The channel's config in force now (it changes with config blocks): take it once per
    /// request and use that one throughout.
    pub fn config(&self) -> Arc<Channel> {
        self.committer.config()
    }

    /// Hands the channel its tasks; [`PeerChannel::abort_tasks`] ends them.
    pub fn own_tasks(&self, tasks: Vec<JoinHandle<()>>) {
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
}

/// Where a channel's commit path reports a storage failure: the node must then stop. The first
/// report wins; any task of any channel may report.
#[derive(Debug, Clone)]
pub struct Fatal(Arc<watch::Sender<Option<String>>>);

impl Default for Fatal {
    fn default() -> Self {
        Fatal(Arc::new(watch::Sender::new(None)))
    }
}

impl Fatal {
    pub fn report(&self, reason: String) {
        self.0.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Completes with the first reason reported.
    pub async fn reported(&self) -> String {
        let mut rx = self.0.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }
}

/// Every channel of the peer, plus what services share.
#[derive(Debug)]
pub struct Registry {
    channels: RwLock<BTreeMap<String, Arc<PeerChannel>>>,
    pub identity: Arc<SigningIdentity>,
    pub chaincodes: Arc<ChaincodeRegistry>,
    pub metrics: Arc<Metrics>,
    /// Current time in Unix seconds (injected so tests can move it).
    pub clock: fn() -> i64,
    pub fatal: Fatal,
}

impl Registry {
    /// A registry with no channel yet, on the system clock.
    pub fn new(
        identity: Arc<SigningIdentity>,
        chaincodes: Arc<ChaincodeRegistry>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registry {
            channels: RwLock::default(),
            identity,
            chaincodes,
            metrics,
            clock: system_clock,
            fatal: Fatal::default(),
        }
    }

    pub fn get(&self, channel_id: &str) -> Option<Arc<PeerChannel>> {
        self.read().get(channel_id).cloned()
    }

    /// The channels this peer runs now, by id.
    pub fn channels(&self) -> Vec<Arc<PeerChannel>> {
        self.read().values().cloned().collect()
    }

    /// The ids of the channels this peer runs now, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Adds `channel` unless one with its id is there; `false` if one was.
    pub fn insert(&self, channel: Arc<PeerChannel>) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if channels.contains_key(&channel.id) {
            return false;
        }
        channels.insert(channel.id.clone(), channel);
        true
    }

    pub fn remove(&self, channel_id: &str) -> Option<Arc<PeerChannel>> {
        self.channels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel_id)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<PeerChannel>>> {
        self.channels.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now_unix(&self) -> i64 {
        (self.clock)()
    }
}

pub use shared_proto::system_clock;
