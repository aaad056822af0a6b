//! The channels this peer has joined, and what every service shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared_proto::channel::Channel;
use shared_proto::msp::SigningIdentity;

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
}

impl PeerChannel {
    /// The channel's config in force now (it changes with config blocks): take it once per
    /// request and use that one throughout.
    pub fn config(&self) -> Arc<Channel> {
        self.committer.config()
    }
}

/// Every channel of the peer, plus what services share.
#[derive(Debug)]
pub struct Registry {
    pub channels: BTreeMap<String, Arc<PeerChannel>>,
    pub identity: Arc<SigningIdentity>,
    pub chaincodes: Arc<ChaincodeRegistry>,
    pub metrics: Arc<Metrics>,
    /// Current time in Unix seconds (injected so tests can move it).
    pub clock: fn() -> i64,
}

impl Registry {
    pub fn get(&self, channel_id: &str) -> Option<&Arc<PeerChannel>> {
        self.channels.get(channel_id)
    }

    pub fn now_unix(&self) -> i64 {
        (self.clock)()
    }
}

pub use shared_proto::system_clock;
