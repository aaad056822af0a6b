//! A network of real node processes for the crash-point tests: each node is this crate's
//! `devnet` binary re-run as `node orderer|peer --config FILE` (built with the `failpoints`
//! feature), with its own environment, so one node can carry `FAILPOINTS` and Raft timings
//! that make it the leader. Also the chain checks: every orderer's chain by Deliver, a peer's
//! by its Query service, verified from genesis against the acknowledged transactions.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::launcher;
use chaos_tests::launcher::Kind;
use chaos_tests::topology::nodes;
use chaos_tests::topology::NodeView;
use chaos_tests::topology::Topology;
use chaos_tests::topology::CHANNEL;
use futures::StreamExt as _;
use peer::sdk::Gateway;
use prost::Message as _;
use shared_proto::block;
use shared_proto::block::Expected;
use shared_proto::channel::Channel as ChannelConfig;
use shared_proto::envelope;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status as BlockStatus;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type as OrdererType;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::tx::TxValidationCode;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

pub use shared_proto::failpoints::CRASH_EXIT_CODE;

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Raft timings (environment overrides) that make one orderer win every election: it times out
/// long before the others, which still elect a leader within seconds when it is gone.
pub fn raft_env(leader: bool) -> Vec<(String, String)> {
    let (min, max) = if leader { (200, 400) } else { (2000, 3000) };
    vec![
        (
            "WEFT_ORDERER_RAFT__ELECTION_TIMEOUT_MIN_MS".into(),
            min.to_string(),
        ),
        (
            "WEFT_ORDERER_RAFT__ELECTION_TIMEOUT_MAX_MS".into(),
            max.to_string(),
        ),
    ]
}

/// One node process; SIGTERM (then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited() {
                return Ok(s);
            }
            anyhow::ensure!(Instant::now() < deadline, "still running after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a graceful stop), then SIGKILL if it has not exited within 10 s.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.exited() {
            return Ok(s);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        match self.wait_exit(Duration::from_secs(10)).await {
            Ok(s) => Ok(s),
            Err(_) => {
                let _ = self.child.kill();
                Ok(self.child.wait()?)
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A generated network and its node processes (indexed as `layout`).
pub struct Net {
    _dir: tempfile::TempDir,
    pub generated: Generated,
    pub layout: Vec<NodeView>,
    pub procs: Vec<Option<Proc>>,
    /// Environment every start of node `i` gets (not `FAILPOINTS`: see [`Net::start`]).
    pub env: Vec<Vec<(String, String)>>,
    /// The `FAILPOINTS` node `i` was last started with.
    failpoints: Vec<Option<String>>,
    pub logs: PathBuf,
    pub client: SigningIdentity,
    tls: ClientTlsConfig,
    /// The channel's genesis config: what blocks are verified against.
    pub channel: ChannelConfig,
}

impl Net {
    /// Generates a network of `topology` (nothing started).
    pub fn generate(topology: Topology) -> anyhow::Result<Net> {
        let dir = tempfile::tempdir()?;
        let generated = material::generate(&topology.spec()?, &dir.path().join("net"), now_unix())?;
        let layout = nodes(&generated);
        let user = generated.user("Org1MSP", "User1").context("user")?;
        let client = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key)?;
        let mut ca = Vec::new();
        for c in &generated.tls_ca_certs {
            ca.extend(std::fs::read(c)?);
        }
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(
                std::fs::read(&user.tls_cert)?,
                std::fs::read(&user.tls_key)?,
            ))
            .domain_name("127.0.0.1");
        let genesis = Block::decode(std::fs::read(&generated.channels[0].1)?.as_slice())?;
        let (channel, _) = block::verify_genesis(&genesis)?;
        Ok(Net {
            logs: dir.path().join("logs"),
            procs: layout.iter().map(|_| None).collect(),
            env: layout.iter().map(|_| Vec::new()).collect(),
            failpoints: layout.iter().map(|_| None).collect(),
            _dir: dir,
            generated,
            layout,
            client,
            tls,
            channel,
        })
    }

    pub fn index(&self, name: &str) -> usize {
        self.layout.iter().position(|v| v.name == name).unwrap()
    }

    pub fn orderers(&self) -> Vec<usize> {
        (0..self.layout.len())
            .filter(|i| self.layout[*i].kind == Kind::Orderer)
            .collect()
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.logs
            .join(format!("{}.log", self.layout[i].name.replace('/', "-")))
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    /// The data directory of node `i` (from its config file).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        let v = &self.layout[i];
        match v.kind {
            Kind::Orderer => orderer::process::load_config(&v.config).unwrap().data_dir,
            Kind::Peer => peer::process::load_config(&v.config).unwrap().data_dir,
        }
    }

    /// Starts node `i` with its environment, plus `FAILPOINTS=failpoints` if given.
    pub fn start(&mut self, i: usize, failpoints: Option<&str>) -> anyhow::Result<()> {
        let v = &self.layout[i];
        let log = self.log(i);
        std::fs::create_dir_all(&self.logs)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = Command::new(Path::new(env!("CARGO_BIN_EXE_devnet")));
        command
            .args(["node", v.kind.as_str(), "--config"])
            .arg(&v.config)
            .envs(self.env[i].iter().map(|(k, v)| (k, v)))
            .env_remove(shared_proto::failpoints::ENV)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(fp) = failpoints {
            command.env(shared_proto::failpoints::ENV, fp);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", v.name))?;
        self.procs[i] = Some(Proc {
            child,
            status: None,
        });
        self.failpoints[i] = failpoints.map(str::to_owned);
        Ok(())
    }

    /// Starts node `i` again as it was last started (its failpoints armed afresh).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let failpoints = self.failpoints[i].clone();
        self.start(i, failpoints.as_deref())
    }

    pub fn proc(&mut self, i: usize) -> &mut Proc {
        self.procs[i].as_mut().expect("node was started")
    }

    /// Waits until nodes `which` answer `/readyz` with 200; fails if one of them exits.
    pub async fn wait_ready(&mut self, which: &[usize], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut ready = 0;
            for &i in which {
                if let Some(status) = self.procs[i].as_mut().and_then(Proc::exited) {
                    anyhow::bail!(
                        "{} exited ({status}); log:\n{}",
                        self.layout[i].name,
                        tail(&self.log_text(i), 30)
                    );
                }
                if let Ok((200, _)) = launcher::http_get(&self.layout[i].ops, "/readyz").await {
                    ready += 1;
                }
            }
            if ready == which.len() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {ready} of {} nodes ready within {within:?}",
                which.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The channel's entry of node `i`'s `/status`.
    pub async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let s = launcher::status(&self.layout[i].ops).await.ok()?;
        Some(s["channels"][CHANNEL].clone())
    }

    /// (height, last block hash) of node `i`; `None` while an orderer holds envelopes not yet
    /// cut into a block (acked envelopes wait there for the batch timeout).
    pub async fn tip(&self, i: usize) -> Option<(u64, String)> {
        let s = self.status(i).await?;
        if s["pending"].as_u64().is_some_and(|p| p > 0) {
            return None;
        }
        Some((
            s["height"].as_u64()?,
            s["last_block_hash"].as_str()?.to_owned(),
        ))
    }

    /// Waits until nodes `which` report the same height (at least `min`) and last block hash,
    /// with nothing pending.
    pub async fn converged(&self, which: &[usize], min: u64) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut all = Vec::new();
            for &i in which {
                all.push(self.tip(i).await);
            }
            if let Some(Some(first)) = all.first() {
                if first.0 >= min && all.iter().all(|s| s.as_ref() == Some(first)) {
                    return Ok(first.clone());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nodes did not converge at height >= {min}: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node id of orderer `i` and the leader it sees.
    pub async fn raft_view(&self, i: usize) -> Option<(u64, Option<u64>)> {
        let s = launcher::status(&self.layout[i].ops).await.ok()?;
        let node_id = s["node_id"].as_u64()?;
        Some((node_id, s["channels"][CHANNEL]["leader"].as_u64()))
    }

    pub fn endpoint(&self, i: usize) -> Channel {
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.layout[i].ports[0]))
            .unwrap()
            .tls_config(self.tls.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .connect_lazy()
    }

    /// Blocks `0..height` of orderer `i` by Deliver.
    pub async fn deliver(&self, i: usize, height: u64) -> anyhow::Result<Vec<Block>> {
        anyhow::ensure!(height > 0, "nothing to deliver");
        let seek = SeekInfo {
            start: Some(shared_proto::seek::specified(0)),
            stop: Some(shared_proto::seek::specified(height - 1)),
            behavior: SeekBehavior::FailIfNotReady as i32,
        };
        let request = envelope::create_signed_envelope(
            &self.client,
            HeaderType::DeliverSeekInfo,
            CHANNEL,
            seek.encode_to_vec(),
            envelope::new_nonce(),
            now_unix() as u64 * 1000,
        );
        let mut stream = AtomicBroadcastClient::new(self.endpoint(i))
            .max_decoding_message_size(64 << 20)
            .deliver(futures::stream::iter([request]))
            .await?
            .into_inner();
        let mut blocks = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg?.r#type {
                Some(OrdererType::Block(b)) => blocks.push(b),
                Some(OrdererType::Status(s)) => {
                    anyhow::ensure!(s == BlockStatus::Success as i32, "deliver status {s}");
                    return Ok(blocks);
                }
                None => anyhow::bail!("empty deliver response"),
            }
        }
        anyhow::bail!("deliver stream ended without a status")
    }

    /// Verifies `blocks` as a chain from genesis (numbers, hash links, data hashes, orderer
    /// signatures); returns each block's header hash.
    pub fn verify_chain(&self, blocks: &[Block]) -> anyhow::Result<Vec<[u8; 32]>> {
        let first = blocks.first().context("no blocks")?;
        let (_, genesis) = block::verify_genesis(first)?;
        let mut hashes = vec![genesis];
        for (n, b) in blocks.iter().enumerate().skip(1) {
            let expected = Expected {
                number: n as u64,
                previous_hash: Some(hashes[n - 1]),
            };
            let h = block::verify_block(&self.channel, b, expected, now_unix())
                .with_context(|| format!("block {n}"))?;
            hashes.push(h);
        }
        Ok(hashes)
    }

    /// Delivers every orderer's chain at `height`, verifies each and checks they are the same
    /// chain holding every `acked` tx id exactly once.
    pub async fn check_orderer_chains(
        &self,
        height: u64,
        acked: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let mut first: Option<Vec<[u8; 32]>> = None;
        for i in self.orderers() {
            let name = &self.layout[i].name;
            let blocks = self.deliver(i, height).await.context(name.clone())?;
            anyhow::ensure!(
                blocks.len() as u64 == height,
                "{name}: {} blocks",
                blocks.len()
            );
            let hashes = self.verify_chain(&blocks).context(name.clone())?;
            match &first {
                None => first = Some(hashes),
                Some(f) => anyhow::ensure!(*f == hashes, "{name}'s chain differs"),
            }
            let mut counts = BTreeMap::<String, usize>::new();
            for b in blocks.iter().skip(1) {
                for env in block::tx_envelopes(b) {
                    if let Some(id) = orderer::block_store::tx_id_of(env) {
                        *counts.entry(id).or_default() += 1;
                    }
                }
            }
            for tx in acked {
                anyhow::ensure!(
                    counts.get(tx) == Some(&1),
                    "{name}: acked tx {tx} appears {:?} times",
                    counts.get(tx)
                );
            }
            anyhow::ensure!(counts.values().all(|c| *c == 1), "{name}: a tx twice");
        }
        Ok(())
    }
}

impl Net {
    /// (height, last block hash, state hash) of peer `i`.
    pub async fn peer_tip(&self, i: usize) -> Option<(u64, String, String)> {
        let s = self.status(i).await?;
        Some((
            s["height"].as_u64()?,
            s["last_block_hash"].as_str()?.to_owned(),
            s["state_hash"].as_str()?.to_owned(),
        ))
    }

    /// Waits until peers `a` and `b` agree on height, last block hash and state hash.
    pub async fn peers_converged(
        &self,
        a: usize,
        b: usize,
    ) -> anyhow::Result<(u64, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (x, y) = (self.peer_tip(a).await, self.peer_tip(b).await);
            if let (Some(x), Some(y)) = (&x, &y) {
                if x == y {
                    return Ok(x.clone());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "peers differ: {x:?} vs {y:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A gateway whose only endorser (and commit-status and block source) is peer `i`.
    pub fn gateway_at(&self, i: usize) -> Gateway {
        let addr = format!("127.0.0.1:{}", self.layout[i].ports[0]);
        Gateway::from_network_with_endorsers(&self.generated, "Org1MSP", "User1", CHANNEL, &[addr])
            .unwrap()
    }

    /// Reads peer `i`'s chain `0..height` through its Query service, verifies it, and checks
    /// that every `acked` tx is in it once and VALID.
    pub async fn check_peer_chain(
        &self,
        i: usize,
        height: u64,
        acked: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let name = &self.layout[i].name;
        let gw = self.gateway_at(i);
        let mut blocks = Vec::new();
        for n in 0..height {
            blocks.push(
                gw.block_by_number(n)
                    .await
                    .with_context(|| format!("{name} block {n}"))?,
            );
        }
        self.verify_chain(&blocks).context(name.clone())?;
        let mut counts = BTreeMap::<String, usize>::new();
        for b in blocks.iter().skip(1) {
            for env in block::tx_envelopes(b) {
                if let Some(id) = orderer::block_store::tx_id_of(env) {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        anyhow::ensure!(counts.values().all(|c| *c == 1), "{name}: a tx twice");
        for tx in acked {
            anyhow::ensure!(counts.get(tx) == Some(&1), "{name}: acked tx {tx} missing");
            let p = gw.transaction_by_id(tx).await?;
            anyhow::ensure!(
                p.validation_code == TxValidationCode::Valid as i32,
                "{name}: tx {tx} has code {}",
                p.validation_code
            );
        }
        Ok(())
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
