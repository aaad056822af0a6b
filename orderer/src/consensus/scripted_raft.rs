//! A scripted Raft for the proposer's and the batch timer's unit tests: a leader (or not) whose
//! writes hang or commit at once with a given response, recording what was written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::raft::ClientWriteResponse;
use openraft::BasicNode;
use openraft::CommittedLeaderId;
use openraft::LogId;
use openraft::RaftMetrics;
use tokio::sync::watch;
use tokio::time::Instant;

use super::proposer::Consensus;
use super::proposer::WriteError;
use super::NodeId;
use super::Request;
use super::Response;
use super::TypeConfig;

/// What the scripted Raft does with a write.
#[derive(Debug, Clone)]
pub enum Script {
    /// Never answers (a write whose entry was replaced).
    Hang,
    /// Commits at once with this response.
    Commit(Response),
}

#[derive(Clone)]
pub struct ScriptedRaft {
    pub script: Arc<Mutex<Script>>,
    pub metrics: Arc<watch::Sender<RaftMetrics<NodeId, BasicNode>>>,
    pub writes: Arc<std::sync::atomic::AtomicUsize>,
    /// The `TimeToCut` markers written, with when.
    pub cuts: Arc<Mutex<Vec<(u64, Instant)>>>,
    /// The `QuietCut` markers written, with when.
    pub quiet_cuts: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl ScriptedRaft {
    pub fn leader(script: Script) -> Self {
        let mut m = RaftMetrics::new_initial(1);
        m.current_term = 3;
        m.current_leader = Some(1);
        ScriptedRaft {
            script: Arc::new(Mutex::new(script)),
            metrics: Arc::new(watch::Sender::new(m)),
            writes: Arc::default(),
            cuts: Arc::default(),
            quiet_cuts: Arc::default(),
        }
    }

    pub fn lose_leadership(&self) {
        self.metrics.send_modify(|m| {
            m.current_term = 4;
            m.current_leader = Some(2);
        });
    }

    /// Elected (again): this node leads from a later term.
    pub fn win_leadership(&self) {
        self.metrics.send_modify(|m| {
            m.current_term += 1;
            m.current_leader = Some(m.id);
        });
    }
}

impl Consensus for ScriptedRaft {
    fn write(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<ClientWriteResponse<TypeConfig>, WriteError>> + Send {
        match request {
            Request::TimeToCut { block_number } => self
                .cuts
                .lock()
                .unwrap()
                .push((block_number, Instant::now())),
            Request::QuietCut { block_number } => self
                .quiet_cuts
                .lock()
                .unwrap()
                .push((block_number, Instant::now())),
            Request::Envelopes(_) => {}
        }
        let script = self.script.lock().unwrap().clone();
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            match script {
                Script::Hang => std::future::pending().await,
                Script::Commit(data) => Ok(ClientWriteResponse {
                    log_id: LogId::new(CommittedLeaderId::new(3, 1), n as u64 + 1),
                    data,
                    membership: None,
                }),
            }
        }
    }

    fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.metrics.subscribe()
    }

    fn quorum_silence_max(&self) -> Duration {
        Duration::from_secs(1)
    }
}
