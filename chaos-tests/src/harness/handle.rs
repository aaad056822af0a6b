//! One node handle for both backends: a node process (or container) of [`super::Node`] and a
//! node in this process on its own runtime ([`super::inprocess::InProcessNode`]).
//!
//! What a backend cannot do it refuses with an error naming the node (an in-process node cannot
//! be paused: its runtime's threads cannot be frozen).

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Node;
use super::State;
use crate::launcher::Kind;

/// Where a node listens: its service port (orderer client, peer service), its second port
/// (orderer cluster, peer gossip) and its ops endpoint, each `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    pub service: String,
    /// The orderer's cluster address or the peer's gossip address.
    pub internal: String,
    pub ops: String,
}

/// What the harness does with a node, whatever it runs as.
pub trait NodeHandle {
    fn name(&self) -> &str;
    fn kind(&self) -> Kind;
    fn state(&mut self) -> State;
    /// Starts a stopped node (the first time on the ports held for it).
    fn start(&mut self) -> anyhow::Result<()>;
    /// Stops the node abruptly: nothing of its shutdown path runs.
    fn kill(&mut self);
    /// Stops the node gracefully.
    fn stop(&mut self);
    /// Freezes the node with its sockets open, where the backend can.
    fn pause(&mut self) -> anyhow::Result<()>;
    fn resume(&mut self) -> anyhow::Result<()>;
    /// Stops the node gracefully and starts it again on the same data dir.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start()
    }
    fn addresses(&self) -> Addresses;
    fn data_dir(&self) -> &Path;
}

impl NodeHandle for Node {
    fn name(&self) -> &str {
        Node::name(self)
    }

    fn kind(&self) -> Kind {
        Node::kind(self)
    }

    fn state(&mut self) -> State {
        Node::state(self)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let exe: PathBuf = self
            .exe()
            .with_context(|| format!("{}: no executable to start it with", self.name()))?
            .to_path_buf();
        Node::start(self, &exe)
    }

    fn kill(&mut self) {
        Node::kill(self);
    }

    fn stop(&mut self) {
        Node::stop(self);
    }

    fn pause(&mut self) -> anyhow::Result<()> {
        Node::pause(self)
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        Node::resume(self)
    }

    fn addresses(&self) -> Addresses {
        let host = shared_proto::tls::host_of(&self.view.ops).to_owned();
        let at = |i: usize| {
            self.view
                .ports
                .get(i)
                .map_or_else(String::new, |p| format!("{host}:{p}"))
        };
        // NodeView's ports: orderer (client, cluster, ops), peer (service, ops, gossip).
        let internal = match self.kind() {
            Kind::Orderer => at(1),
            Kind::Peer => at(2),
        };
        Addresses {
            service: at(0),
            internal,
            ops: self.view.ops.clone(),
        }
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
