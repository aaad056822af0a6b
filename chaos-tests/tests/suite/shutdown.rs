//! SIGTERM as an operator (or Kubernetes) sends it, to every node of a running network of
//! processes while long-lived streams are open: each node's clients' Deliver or events streams,
//! the peers' Deliver streams from the orderers and the peers' gossip streams with each other.
//! Each node must end its streams with a retryable status, exit 0 within the bound (5 s; the
//! test allows 10 s on a loaded box and prints the figure), log "stopped", and restart with its
//! chain intact; the chain then continues on every node.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use chaos_tests::launcher;
use chaos_tests::launcher::Kind;
use chaos_tests::launcher::NodeProcess;
use chaos_tests::topology::nodes;
use chaos_tests::topology::NodeView;
use chaos_tests::topology::Topology;
use chaos_tests::topology::CHANNEL;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::material;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status as BlockStatus;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type as OrdererType;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::peer::deliver_client::DeliverClient;
use shared_proto::pb::peer::deliver_response::Type as PeerType;
use tokio::sync::oneshot;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

/// The bound the issue names for a node to stop after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// What the test allows on a loaded 2-core box.
const STOP_ALLOWED: Duration = Duration::from_secs(10);
/// How long the test waits for an exit before failing (instead of hanging).
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Net {
    layout: Vec<NodeView>,
    procs: Vec<NodeProcess>,
    client: SigningIdentity,
    tls: ClientTlsConfig,
    logs: std::path::PathBuf,
}

impl Net {
    fn endpoint(&self, i: usize) -> Channel {
        Endpoint::from_shared(format!("https://127.0.0.1:{}", self.layout[i].ports[0]))
            .unwrap()
            .tls_config(self.tls.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    fn spawn(&self, i: usize) -> anyhow::Result<NodeProcess> {
        let v = &self.layout[i];
        NodeProcess::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_devnet")),
            v.kind,
            &v.name,
            &v.config,
            &self.logs.join(format!("{}.log", v.name.replace('/', "-"))),
        )
    }

    fn seek_envelope(&self, start: u64) -> shared_proto::pb::common::Envelope {
        let seek = SeekInfo {
            start: Some(shared_proto::seek::specified(start)),
            stop: Some(shared_proto::seek::follow()),
            behavior: SeekBehavior::BlockUntilReady as i32,
        };
        envelope::create_signed_envelope(
            &self.client,
            HeaderType::DeliverSeekInfo,
            CHANNEL,
            seek.encode_to_vec(),
            envelope::new_nonce(),
            now_unix() as u64 * 1000,
        )
    }

    /// Opens a follow-forever stream to node `i` (orderer Deliver or peer filtered events);
    /// the receiver says how the stream ended.
    async fn open_stream(&self, i: usize, start: u64) -> anyhow::Result<oneshot::Receiver<String>> {
        let (done, ended) = oneshot::channel();
        let request = futures::stream::iter([self.seek_envelope(start)]);
        match self.layout[i].kind {
            Kind::Orderer => {
                let mut stream = AtomicBroadcastClient::new(self.endpoint(i))
                    .max_decoding_message_size(64 << 20)
                    .deliver(request)
                    .await?
                    .into_inner();
                tokio::spawn(async move {
                    let end = loop {
                        match stream.next().await {
                            Some(Ok(m)) => match m.r#type {
                                Some(OrdererType::Block(_)) => continue,
                                Some(OrdererType::Status(s)) => break in_band(s),
                                None => break "empty message".to_owned(),
                            },
                            Some(Err(s)) => break grpc(&s),
                            None => break "ended without a status".to_owned(),
                        }
                    };
                    let _ = done.send(end);
                });
            }
            Kind::Peer => {
                let mut stream = DeliverClient::new(self.endpoint(i))
                    .max_decoding_message_size(64 << 20)
                    .deliver_filtered(request)
                    .await?
                    .into_inner();
                tokio::spawn(async move {
                    let end = loop {
                        match stream.next().await {
                            Some(Ok(m)) => match m.r#type {
                                Some(PeerType::Status(s)) => break in_band(s),
                                Some(_) => continue,
                                None => break "empty message".to_owned(),
                            },
                            Some(Err(s)) => break grpc(&s),
                            None => break "ended without a status".to_owned(),
                        }
                    };
                    let _ = done.send(end);
                });
            }
        }
        Ok(ended)
    }

    /// Submits `count` envelopes through any orderer that answers (retrying for a while).
    async fn submit(&self, count: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0;
        let mut node = 0;
        while sent < count {
            let env = envelope::create_signed_envelope(
                &self.client,
                HeaderType::EndorserTransaction,
                CHANNEL,
                format!("shutdown test tx {sent} {}", now_unix()).into_bytes(),
                envelope::new_nonce(),
                now_unix() as u64 * 1000,
            );
            let i = node % 3;
            match AtomicBroadcastClient::new(self.endpoint(i))
                .submit(env)
                .await
            {
                Ok(_) => sent += 1,
                Err(e) => {
                    anyhow::ensure!(Instant::now() < deadline, "submit keeps failing: {e}");
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    }

    async fn status(&self, i: usize) -> Option<(u64, String)> {
        let s = launcher::status(&self.layout[i].ops).await.ok()?;
        let ch = &s["channels"][CHANNEL];
        Some((
            ch["height"].as_u64()?,
            ch["last_block_hash"].as_str()?.to_owned(),
        ))
    }

    /// Waits until every node reports the same height and last block hash, at least `min`.
    async fn converged(&self, min: u64) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut all = Vec::new();
            for i in 0..self.layout.len() {
                all.push(self.status(i).await);
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
}

fn in_band(s: i32) -> String {
    format!(
        "in-band {}",
        BlockStatus::try_from(s).map_or("unknown", |s| s.as_str_name())
    )
}

fn grpc(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn stopped_lines(log: &std::path::Path, kind: Kind) -> usize {
    let needle = format!("{} stopped", kind.as_str());
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle) && !l.contains("ERROR"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_node_with_streams_open_and_it_restarts_with_its_chain(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir()?;
    let topology = Topology {
        name: "shutdown".into(),
        orderers: 3,
        orgs: 1,
        peers_per_org: 2,
        connected_peers_per_org: 1,
        batch_size: 10,
        batch_timeout_ms: 50,
        base_port: launcher::free_port_range(15)?,
    };
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
    let mut net = Net {
        layout,
        procs: Vec::new(),
        client,
        tls,
        logs: dir.path().join("logs"),
    };
    for i in 0..net.layout.len() {
        let p = net.spawn(i)?;
        net.procs.push(p);
    }
    launcher::wait_ready(&net.layout, &mut net.procs, Duration::from_secs(120)).await?;
    net.submit(20).await?;
    let (mut height, _) = net.converged(2).await?;
    println!("network of {} nodes at height {height}", net.layout.len());

    let mut figures = Vec::new();
    for i in 0..net.layout.len() {
        let name = net.layout[i].name.clone();
        let kind = net.layout[i].kind;
        // Every node has a client stream open, and the network's own streams (peers' Deliver
        // from an orderer, gossip between the peers) are up.
        let ended = net.open_stream(i, height).await?;
        let log = net.procs[i].log.clone();
        let stopped_before = stopped_lines(&log, kind);
        let pid = net.procs[i].pid().context("pid")?;
        let sent = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(killed.success(), "kill -TERM {pid} failed");
        let status = loop {
            if let Some(s) = net.procs[i].exited() {
                break s;
            }
            anyhow::ensure!(
                sent.elapsed() < EXIT_DEADLINE,
                "{name} still running {EXIT_DEADLINE:?} after SIGTERM (log {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = sent.elapsed();
        println!("{name}: exited {status} {took:?} after SIGTERM (bound {STOP_BOUND:?})");
        figures.push((name.clone(), took));
        anyhow::ensure!(status.success(), "{name} exited with {status}");
        anyhow::ensure!(
            took < STOP_ALLOWED,
            "{name} took {took:?} to stop (allowed {STOP_ALLOWED:?})"
        );
        anyhow::ensure!(
            stopped_lines(&log, kind) == stopped_before + 1,
            "{name} did not log \"{} stopped\" (log {})",
            kind.as_str(),
            log.display()
        );
        let drained = std::fs::read_to_string(&log)?
            .lines()
            .filter(|l| l.contains("still draining"))
            .count();
        anyhow::ensure!(
            drained == 0,
            "{name}: a server had to be cut off instead of ending its calls (log {})",
            log.display()
        );
        let how = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .context("client stream still open after the node exited")?
            .unwrap_or_else(|_| "stream task gone".into());
        println!("{name}: client stream ended with {how}");
        anyhow::ensure!(
            how == "in-band SERVICE_UNAVAILABLE"
                || (how.starts_with("Unavailable") && how.contains("node is stopping")),
            "{name}: client stream ended with {how}, expected a retryable 'node is stopping'"
        );

        // Restart: the node comes back with its chain, and the chain continues.
        net.procs[i] = net.spawn(i)?;
        launcher::wait_ready(&net.layout, &mut net.procs, Duration::from_secs(120)).await?;
        let (h, _) = net
            .status(i)
            .await
            .with_context(|| format!("{name} status after restart"))?;
        anyhow::ensure!(h >= height, "{name} restarted at height {h}, had {height}");
        net.submit(10).await?;
        (height, _) = net.converged(height + 1).await?;
    }
    let (final_height, hash) = net.converged(height).await?;
    println!("after the rolling restart every node is at height {final_height}, last block {hash}");
    println!("stop times: {figures:?}");
    Ok(())
}
