//! Orderers as real processes (the `orderer` binary an operator runs, from the same config,
//! data dir and ports as the in-process test node), for faults a process must suffer:
//! SIGKILL, SIGSTOP and SIGCONT.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::launcher::Kind;
use chaos_tests::launcher::NodeProcess;

use super::TestCluster;
use super::CHANNEL;

/// The cluster's orderers, each running as a child process (the chaos harness's
/// [`NodeProcess`]: the same spawn, SIGKILL, signals and stop as its process backend).
pub struct OrdererProcesses {
    dir: PathBuf,
    children: Vec<Option<NodeProcess>>,
}

impl OrdererProcesses {
    /// Stops every in-process node of `cluster` and starts the real binary in its place.
    pub fn take_over(cluster: &mut TestCluster) -> anyhow::Result<Self> {
        let dir = cluster.dir.path().join("processes");
        std::fs::create_dir_all(&dir)?;
        let mut procs = OrdererProcesses {
            dir,
            children: (0..cluster.nodes.len()).map(|_| None).collect(),
        };
        for i in 0..cluster.nodes.len() {
            cluster.stop_node(i)?;
            procs.start(cluster, i)?;
        }
        Ok(procs)
    }

    /// Starts node `i`'s process, `orderer start --config FILE` (its log goes to
    /// `orderer<i+1>.log` in the test dir).
    pub fn start(&mut self, cluster: &TestCluster, i: usize) -> anyhow::Result<()> {
        let config = self.dir.join(format!("orderer{}.toml", i + 1));
        std::fs::write(&config, toml::to_string(&cluster.nodes[i].config)?)?;
        // WEFT_TEST_NODE_WRAPPER runs each node under a tool (e.g. `heaptrack`), for profiling.
        let wrapper = std::env::var("WEFT_TEST_NODE_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace().map(str::to_owned);
        let binary = env!("CARGO_BIN_EXE_orderer");
        let (program, mut args) = match words.next() {
            Some(tool) => (
                PathBuf::from(tool),
                words.chain([binary.to_owned()]).collect(),
            ),
            None => (PathBuf::from(binary), Vec::new()),
        };
        args.push("start".to_owned());
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let name = format!("orderer{}", i + 1);
        let p = NodeProcess::spawn_program(
            &program,
            &args,
            Kind::Orderer,
            &name,
            &config,
            &self.log(i),
            &env,
        )
        .context("starting the orderer binary")?;
        self.children[i] = Some(p);
        Ok(())
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("orderer{}.log", i + 1))
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().and_then(NodeProcess::pid)
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        self.children[i]
            .as_ref()
            .context("node is not running")?
            .signal(signal)
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.children[i].take() {
            p.kill();
        }
    }

    /// Node `i`'s `/status` for the test channel.
    pub async fn status(cluster: &TestCluster, i: usize) -> anyhow::Result<serde_json::Value> {
        let (code, body) = cluster.ops_get(i, "/status").await?;
        anyhow::ensure!(code == 200, "/status answered {code}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["channels"][CHANNEL].clone())
    }

    /// Index of the leader as node `i` sees it.
    pub async fn leader_seen_by(cluster: &TestCluster, i: usize) -> Option<usize> {
        let st = Self::status(cluster, i).await.ok()?;
        st["leader"].as_u64().map(|id| id as usize - 1)
    }

    /// Waits until the nodes in `among` agree on a leader that is one of them.
    pub async fn wait_for_leader(
        cluster: &TestCluster,
        among: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &i in among {
                seen.push(Self::leader_seen_by(cluster, i).await);
            }
            if let Some(Some(l)) = seen.first() {
                if among.contains(l) && seen.iter().all(|s| *s == Some(*l)) {
                    return Ok(*l);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OrdererProcesses {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            // A stopped process cannot die of SIGKILL until continued.
            let _ = self.signal(i, "CONT");
            self.kill(i);
        }
    }
}
