//! An orderer cluster in this process for the `ordering` benchmark: the sample network's three
//! orderers, each on its own tokio runtime (2 worker threads, as a 2-core node would have),
//! over real TLS sockets on free local ports, with material from the generator in a temp dir.
//! Storage is each node's own fjall database (Raft log appends are fdatasync'ed).

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use orderer::Listeners;
use orderer::Node;
use shared_proto::material;
use shared_proto::material::BatchSpec;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Certificate;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use super::CHANNEL;

/// One running orderer and the runtime it runs on.
struct Running {
    node: Option<Node>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Three orderers plus what a client needs to talk to them.
pub(super) struct Cluster {
    nodes: Vec<Running>,
    addrs: Vec<String>,
    /// Org1MSP User1 (role client): signs envelopes and Deliver requests.
    pub(super) client: SigningIdentity,
    tls: ClientTlsConfig,
}

fn free_listener() -> anyhow::Result<(u16, StdListener)> {
    let listener = StdListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok((listener.local_addr()?.port(), listener))
}

impl Cluster {
    /// Generates the sample network into `dir` with free ports and the given batch settings,
    /// and starts every orderer.
    pub(super) fn start(dir: &Path, batch: BatchSpec) -> anyhow::Result<Self> {
        let mut spec = super::sample_spec()?;
        // Ports are held from here until their node takes them: nobody else can grab one.
        let mut held: Vec<[StdListener; 3]> = Vec::new();
        for org in &mut spec.orderer_orgs {
            for o in &mut org.orderers {
                let (client, cluster, ops) = (free_listener()?, free_listener()?, free_listener()?);
                o.host = "127.0.0.1".into();
                (o.port, o.cluster_port, o.ops_port) = (client.0, cluster.0, ops.0);
                held.push([client.1, cluster.1, ops.1]);
            }
        }
        for ch in &mut spec.channels {
            ch.batch = batch.clone();
        }
        let generated = material::generate(&spec, &dir.join("net"), super::now_unix())
            .context("generating the sample network")?;
        let user = generated
            .user("Org1MSP", "User1")
            .context("Org1MSP User1")?;
        let client = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key)
            .context("identity of Org1MSP User1")?;
        let tls = client_tls(&generated)?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            addrs: Vec::new(),
            client,
            tls,
        };
        anyhow::ensure!(
            held.len() == generated.orderers.len(),
            "one port set per orderer"
        );
        for (node, listeners) in generated.orderers.iter().zip(held) {
            let mut config = OrdererConfig::load(&node.config)
                .with_context(|| format!("loading {}", node.config.display()))?;
            config.log.level = "warn".into();
            config.validate()?;
            cluster.addrs.push(config.listen_address.clone());
            let running = start_node(&config, &node.name, listeners)?;
            cluster.nodes.push(running);
        }
        Ok(cluster)
    }

    /// Number of orderers.
    pub(super) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Waits until a running node knows a leader of the channel.
    pub(super) async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            for r in &self.nodes {
                let leader = r
                    .node
                    .as_ref()
                    .and_then(|n| n.registry.get(CHANNEL))
                    .and_then(|ch| ch.leader());
                if let Some(leader) = leader {
                    return Ok(leader);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no leader elected in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A gRPC client of orderer `i` (one HTTP/2 connection per call of this function).
    pub(super) async fn client(
        &self,
        i: usize,
    ) -> anyhow::Result<AtomicBroadcastClient<GrpcChannel>> {
        let channel = Endpoint::from_shared(format!("https://{}", self.addrs[i]))?
            .tls_config(self.tls.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to orderer {} at {}", i + 1, self.addrs[i]))?;
        Ok(AtomicBroadcastClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// The channel height of orderer `i`'s block store.
    pub(super) fn height(&self, i: usize) -> u64 {
        self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| n.registry.get(CHANNEL))
            .map_or(0, |ch| ch.store.height())
    }

    /// The highest Raft log index any node has (entries proposed so far, all kinds).
    pub(super) fn last_log_index(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|r| r.node.as_ref()?.registry.get(CHANNEL))
            .filter_map(|ch| ch.raft.metrics().borrow().last_log_index)
            .max()
            .unwrap_or(0)
    }

    /// Stops every node gracefully (servers stop, storage is fsynced).
    pub(super) fn stop(&mut self) {
        for r in &mut self.nodes {
            if let (Some(node), Some(rt)) = (r.node.take(), r.runtime.take()) {
                let _ = std::thread::scope(|s| {
                    s.spawn(move || {
                        let _ = rt.block_on(node.shutdown());
                        rt.shutdown_timeout(Duration::from_secs(5));
                    })
                    .join()
                });
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.nodes {
            r.node = None;
            if let Some(rt) = r.runtime.take() {
                rt.shutdown_background();
            }
        }
    }
}

/// The TLS config of Org1MSP User1 trusting every org's TLS CA.
fn client_tls(generated: &Generated) -> anyhow::Result<ClientTlsConfig> {
    let user = generated
        .user("Org1MSP", "User1")
        .context("Org1MSP User1")?;
    let mut ca = Vec::new();
    for path in &generated.tls_ca_certs {
        ca.extend(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(
            std::fs::read(&user.tls_cert)?,
            std::fs::read(&user.tls_key)?,
        ))
        .domain_name("127.0.0.1"))
}

/// Starts one orderer on a fresh runtime on the `listeners` (client, cluster, ops) reserved
/// for it, from a plain thread (the caller may be inside a runtime).
fn start_node(
    config: &OrdererConfig,
    name: &str,
    listeners: [StdListener; 3],
) -> anyhow::Result<Running> {
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<Running> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name(name.to_owned())
                .build()?;
            let node = runtime.block_on(async {
                let [client, cluster, ops] = listeners.map(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                });
                let listeners = Listeners {
                    client: client?,
                    cluster: cluster?,
                    ops: ops?,
                };
                anyhow::Ok(Node::start(config, listeners).await?)
            });
            match node {
                Ok(node) => Ok(Running {
                    node: Some(node),
                    runtime: Some(runtime),
                }),
                Err(e) => {
                    runtime.shutdown_background();
                    Err(e.context(format!("starting {name}")))
                }
            }
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread starting {name} panicked"))?
    })
}
