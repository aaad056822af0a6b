//! How the test orderers reach each other ([`Links`]). With [`Links::Forwarded`], every
//! directed link has its own TCP forwarder that counts the bytes it carries, and each node's
//! `address_overrides` send its connections through its own forwarders, so a test can tell
//! which links carried traffic.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shared_proto::node_config::AddressOverride;
use shared_proto::node_config::OrdererConfig;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;

/// What orderers advertise in the genesis config and how they dial it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Links {
    /// Advertise 127.0.0.1:port and dial it.
    #[default]
    Direct,
    /// Advertise `orderer{n}.weft.invalid:port` (`.invalid` never resolves, RFC 6761) and
    /// dial every advertised address, cluster and client ports, through a forwarder per
    /// directed link named in `address_overrides`.
    Forwarded,
    /// Advertise the same unresolvable names, with no overrides.
    NamesOnly,
}

impl Links {
    /// The host orderer `i` (0-based) advertises; its TLS certificate names it.
    pub fn host(self, i: usize) -> String {
        match self {
            Links::Direct => "127.0.0.1".into(),
            Links::Forwarded | Links::NamesOnly => format!("orderer{}.weft.invalid", i + 1),
        }
    }
}

/// The forwarders of [`Links::Forwarded`]: one per (from, to) node pair and port.
pub struct LinkForwarders {
    cluster: BTreeMap<(usize, usize), Arc<Forwarder>>,
    client: BTreeMap<(usize, usize), Arc<Forwarder>>,
    _runtime: Forwarders,
}

impl LinkForwarders {
    /// Starts a forwarder for every directed link to each node's `(client, cluster)` port and
    /// sets every node's `address_overrides` through its own forwarders.
    pub fn wire(
        configs: &mut [OrdererConfig],
        hosts: &[String],
        ports: &[(u16, u16)],
    ) -> anyhow::Result<Self> {
        let runtime = Forwarders::new()?;
        let (mut cluster, mut client) = (BTreeMap::new(), BTreeMap::new());
        for (from, config) in configs.iter_mut().enumerate() {
            config.address_overrides.clear();
            for (to, (host, (client_port, cluster_port))) in hosts.iter().zip(ports).enumerate() {
                for (port, map) in [(cluster_port, &mut cluster), (client_port, &mut client)] {
                    let f = runtime.start(&format!("127.0.0.1:{port}"))?;
                    config.address_overrides.push(AddressOverride {
                        from: format!("{host}:{port}"),
                        to: f.listen.clone(),
                    });
                    map.insert((from, to), f);
                }
            }
        }
        Ok(LinkForwarders {
            cluster,
            client,
            _runtime: runtime,
        })
    }

    /// Bytes node `from` exchanged with node `to`'s cluster port.
    pub fn cluster_bytes(&self, from: usize, to: usize) -> u64 {
        self.cluster[&(from, to)].bytes()
    }

    /// Bytes node `from` exchanged with node `to`'s client port (catch-up's Deliver).
    pub fn client_bytes(&self, from: usize, to: usize) -> u64 {
        self.client[&(from, to)].bytes()
    }
}

pub struct Forwarder {
    /// Where the forwarder listens (what the dialling node's override names).
    pub listen: String,
    pub target: String,
    bytes: AtomicU64,
}

impl Forwarder {
    /// Bytes carried so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&me.target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::join!(me.pump(in_read, out_write), me.pump(out_read, in_write));
            });
        }
    }

    async fn pump(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        let _ = to.shutdown().await;
    }
}

/// Forwarders on a runtime of their own (they outlive the nodes a test kills).
pub struct Forwarders {
    rt: Option<tokio::runtime::Runtime>,
}

impl Forwarders {
    pub fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("forwarders")
            .build()?;
        Ok(Forwarders { rt: Some(rt) })
    }

    /// Starts a forwarder to `target` on a fresh port of 127.0.0.1.
    pub fn start(&self, target: &str) -> anyhow::Result<Arc<Forwarder>> {
        let std = StdListener::bind("127.0.0.1:0")?;
        std.set_nonblocking(true)?;
        let forwarder = Arc::new(Forwarder {
            listen: std.local_addr()?.to_string(),
            target: target.to_owned(),
            bytes: AtomicU64::new(0),
        });
        let rt = self.rt.as_ref().expect("forwarders running");
        let listener = {
            let _in = rt.enter();
            tokio::net::TcpListener::from_std(std)?
        };
        rt.spawn(forwarder.clone().run(listener));
        Ok(forwarder)
    }
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
