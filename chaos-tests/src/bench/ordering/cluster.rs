//! The three orderers under test, in this process (`harness::inprocess`) or as node processes
//! of their own (`harness::Cluster`, the chaos harness's process backend: `bench node orderer
//! --config FILE`), and what the bench reads from them: heights, Raft log index, blocks cut
//! per reason, CPU and storage writes per process.
//!
//! In-process state is read directly; a node process is asked over its ops endpoint
//! (`/status`, `/metrics`) and through `/proc/<pid>`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use shared_proto::material::BatchSpec;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tonic::transport::Certificate;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use crate::bench::procfs;
use crate::bench::CHANNEL;
use crate::harness;
use crate::harness::inprocess;
use crate::harness::inprocess::Config;
use crate::harness::NodeHandle as _;
use crate::launcher;
use crate::launcher::Kind;

/// How long an ops query (`/status`, `/metrics`) of a node process may take.
const OPS_TIMEOUT: Duration = Duration::from_secs(5);

enum Nodes {
    InProcess(inprocess::Cluster),
    /// The harness's process cluster (its peers are generated but never started) and a
    /// runtime for the ops queries, which the bench makes from plain threads.
    Processes {
        cluster: harness::Cluster,
        ops: tokio::runtime::Runtime,
    },
}

/// The orderers, plus what a client needs to talk to them.
pub(in crate::bench) struct Cluster {
    nodes: Nodes,
    addrs: Vec<String>,
    /// Org1MSP User1 (role client): signs envelopes and Deliver requests.
    pub(in crate::bench) client: SigningIdentity,
    tls: ClientTlsConfig,
}

/// CPU seconds and storage bytes written so far by one process.
#[derive(Debug, Clone)]
pub(in crate::bench) struct ProcessUsage {
    pub(in crate::bench) name: String,
    pub(in crate::bench) cpu_seconds: f64,
    pub(in crate::bench) write_bytes: u64,
}

impl Cluster {
    /// The sample network's orderers in this process (each on a runtime of its own with 2
    /// worker threads, storage fdatasync'ed), ports held from the OS, the given batch settings.
    pub(in crate::bench) fn start_in_process(dir: &Path, batch: BatchSpec) -> anyhow::Result<Self> {
        let mut spec = crate::bench::sample_spec()?;
        for o in spec.orderer_orgs.iter_mut().flat_map(|o| &mut o.orderers) {
            o.host = "127.0.0.1".into();
            (o.port, o.cluster_port, o.ops_port) = (0, 0, 0);
        }
        for ch in &mut spec.channels {
            ch.batch = batch.clone();
        }
        let mut inner =
            inprocess::Cluster::create(spec, dir, inprocess::Ports::default(), |config| {
                if let Config::Orderer(c) = config {
                    c.log.level = "warn".into();
                    c.validate()?;
                }
                Ok(())
            })?;
        let (client, tls) = client_of(&inner.generated)?;
        let mut addrs = Vec::new();
        for node in inner.nodes.iter_mut().filter(|n| n.kind() == Kind::Orderer) {
            addrs.push(node.addresses().service);
            node.start()?;
        }
        Ok(Cluster {
            nodes: Nodes::InProcess(inner),
            addrs,
            client,
            tls,
        })
    }

    /// Three orderer processes started from `exe` (`exe node orderer --config FILE`), as they
    /// are deployed, by the chaos harness's process backend; the channel's batch settings are
    /// `batch_size` envelopes / `timeout_ms` (bytes: the spec defaults, as in [`super::batch`]).
    pub(in crate::bench) fn start_processes(
        dir: &Path,
        exe: &Path,
        batch: &BatchSpec,
    ) -> anyhow::Result<Self> {
        let defaults = shared_proto::node_config::RaftSettings::default();
        let options = harness::Options {
            orderers: 3,
            orgs: 2,
            peers_per_org: 1,
            connected_peers_per_org: 1,
            batch_size: batch.message_count_max,
            batch_timeout_ms: batch.timeout_ms,
            snapshot_interval_entries: defaults.snapshot_interval_entries,
            entries_kept_after_snapshot: defaults.entries_kept_after_snapshot,
            backend: harness::Backend::Process,
        };
        let mut cluster = harness::Cluster::create(&options, dir, exe)?;
        let (client, tls) = client_of(&cluster.generated)?;
        let ops = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("ops query runtime")?;
        let mut addrs = Vec::new();
        for name in cluster.names(Kind::Orderer) {
            let node = cluster.node(&name)?;
            node.set_env("WEFT_ORDERER_LOG__LEVEL", "warn");
            addrs.push(harness::NodeHandle::addresses(&*node).service);
            cluster.start(&name)?;
        }
        ops.block_on(cluster.wait_ready(Duration::from_secs(60)))?;
        Ok(Cluster {
            nodes: Nodes::Processes { cluster, ops },
            addrs,
            client,
            tls,
        })
    }

    /// Whether the orderers are processes of their own.
    pub(in crate::bench) fn processes(&self) -> bool {
        matches!(self.nodes, Nodes::Processes { .. })
    }

    /// Number of orderers.
    pub(in crate::bench) fn len(&self) -> usize {
        self.addrs.len()
    }

    fn channel(&self, i: usize) -> Option<std::sync::Arc<orderer::channels::ChannelRuntime>> {
        match &self.nodes {
            Nodes::InProcess(c) => c.orderers().nth(i)?.orderer()?.registry.get(CHANNEL),
            Nodes::Processes { .. } => None,
        }
    }

    /// Asks orderer process `i`'s ops endpoint (its address) within [`OPS_TIMEOUT`]; `None`
    /// in process mode, for no such node, or without an answer in time.
    fn ask_ops<T, F>(&self, i: usize, ask: impl FnOnce(String) -> F) -> Option<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let Nodes::Processes { cluster, ops } = &self.nodes else {
            return None;
        };
        let node = cluster
            .nodes
            .iter()
            .filter(|n| n.kind() == Kind::Orderer)
            .nth(i)?;
        let call = ask(node.view.ops.clone());
        ops.block_on(async {
            tokio::time::timeout(OPS_TIMEOUT, call)
                .await
                .ok()
                .and_then(Result::ok)
        })
    }

    /// `/status` of orderer process `i` (`Value::Null` if it does not answer in time).
    fn status(&self, i: usize) -> serde_json::Value {
        self.ask_ops(i, |addr| async move { launcher::status(&addr).await })
            .unwrap_or_default()
    }

    /// Waits until the running orderers agree on a leader of the channel; its Raft id.
    pub(in crate::bench) async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let (name, names) = match &self.nodes {
            Nodes::InProcess(c) => (
                c.wait_leader(CHANNEL, timeout).await?,
                c.orderers()
                    .map(|n| n.name().to_owned())
                    .collect::<Vec<_>>(),
            ),
            Nodes::Processes { cluster, .. } => (
                cluster.wait_leader(CHANNEL, timeout).await?,
                cluster.names(Kind::Orderer),
            ),
        };
        let index = names
            .iter()
            .position(|n| *n == name)
            .context("the leader is no orderer")?;
        Ok(u64::try_from(index)? + 1)
    }

    /// A gRPC client of orderer `i` (one HTTP/2 connection per call of this function).
    pub(in crate::bench) async fn client(
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

    /// The channel height of orderer `i`'s block store (0 if unknown).
    pub(in crate::bench) fn height(&self, i: usize) -> u64 {
        match &self.nodes {
            Nodes::InProcess(_) => self.channel(i).map_or(0, |ch| ch.store.height()),
            Nodes::Processes { .. } => self.status(i)["channels"][CHANNEL]["height"]
                .as_u64()
                .unwrap_or(0),
        }
    }

    /// Blocks orderer `i` cut since it started, per reason (`orderer::cutter::CutReason`); a
    /// process's from `weft_orderer_blocks_cut_total{channel,reason}` of its ops `/metrics`.
    pub(in crate::bench) fn blocks_cut(&self, i: usize) -> orderer::cutter::CutCounts {
        match &self.nodes {
            Nodes::InProcess(_) => self
                .channel(i)
                .map_or_else(Default::default, |ch| ch.status.borrow().blocks_cut),
            Nodes::Processes { .. } => cuts_from_metrics(&self.metrics_text(i), CHANNEL),
        }
    }

    /// Orderer process `i`'s ops `/metrics` text (empty if it does not answer in time).
    fn metrics_text(&self, i: usize) -> String {
        self.ask_ops(i, |addr| async move {
            launcher::http_get(&addr, "/metrics").await
        })
        .map(|(_, body)| body)
        .unwrap_or_default()
    }

    /// Broadcast creator signatures verified and the batches they were verified in, summed
    /// over the orderers (`weft_orderer_broadcast_signatures_verified_total`,
    /// `weft_orderer_broadcast_signature_batches_total`).
    pub(in crate::bench) fn signature_batches(&self) -> (u64, u64) {
        (0..self.len())
            .map(|i| match &self.nodes {
                Nodes::InProcess(c) => {
                    c.orderers()
                        .nth(i)
                        .and_then(|n| n.orderer())
                        .map_or((0, 0), |o| {
                            let m = &o.registry.metrics;
                            (
                                m.broadcast_signatures.get(),
                                m.broadcast_signature_batches.get(),
                            )
                        })
                }
                Nodes::Processes { .. } => {
                    let text = self.metrics_text(i);
                    let value = |name: &str| -> u64 {
                        text.lines()
                            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .map_or(0, |v| v as u64)
                    };
                    (
                        value("weft_orderer_broadcast_signatures_verified_total"),
                        value("weft_orderer_broadcast_signature_batches_total"),
                    )
                }
            })
            .fold((0, 0), |(s, b), (s2, b2)| (s + s2, b + b2))
    }

    /// The highest Raft log index any node has (entries proposed so far, all kinds).
    pub(in crate::bench) fn last_log_index(&self) -> u64 {
        (0..self.len())
            .filter_map(|i| match &self.nodes {
                Nodes::InProcess(_) => self
                    .channel(i)
                    .and_then(|ch| ch.raft.metrics().borrow().last_log_index),
                Nodes::Processes { .. } => {
                    self.status(i)["channels"][CHANNEL]["raft"]["last_log_index"].as_u64()
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// CPU and storage writes so far of every process taking part: this one (the clients, and
    /// in process the orderers too) first, then each orderer process.
    pub(in crate::bench) fn usage(&self) -> Vec<ProcessUsage> {
        let this = ProcessUsage {
            name: if self.processes() {
                "bench (clients)".into()
            } else {
                "bench (orderers + clients)".into()
            },
            cpu_seconds: procfs::process_cpu_seconds(),
            write_bytes: procfs::storage_write_bytes(),
        };
        let mut out = vec![this];
        if let Nodes::Processes { cluster, .. } = &self.nodes {
            for node in cluster.nodes.iter().filter(|n| n.kind() == Kind::Orderer) {
                let pid = node.pid();
                out.push(ProcessUsage {
                    name: node.name().to_owned(),
                    cpu_seconds: pid.map_or(0.0, |p| procfs::cpu_seconds_of(Some(p))),
                    write_bytes: pid.map_or(0, |p| procfs::storage_write_bytes_of(Some(p))),
                });
            }
        }
        out
    }

    /// Peak RSS per process, MiB: this process, then each orderer process.
    pub(in crate::bench) fn peak_rss_mib(&self) -> anyhow::Result<Vec<(String, f64)>> {
        let mut out = vec![(
            if self.processes() {
                "bench (clients)".to_owned()
            } else {
                "orderers+clients".to_owned()
            },
            crate::bench::peak_rss_mib()?,
        )];
        if let Nodes::Processes { cluster, .. } = &self.nodes {
            for node in cluster.nodes.iter().filter(|n| n.kind() == Kind::Orderer) {
                let peak = node
                    .pid()
                    .and_then(launcher::rss_mib)
                    .map_or(0.0, |r| r.peak);
                out.push((node.name().to_owned(), peak));
            }
        }
        Ok(out)
    }

    /// Fails naming an orderer process that exited on its own.
    pub(in crate::bench) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Nodes::Processes { cluster, .. } = &mut self.nodes {
            for node in cluster.nodes.iter_mut() {
                if let Some(status) = node.exited() {
                    anyhow::bail!(
                        "{} exited ({status}); see {}",
                        node.name(),
                        node.log.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Stops every node gracefully (servers stop, storage is fsynced).
    pub(in crate::bench) fn stop(&mut self) {
        match &mut self.nodes {
            Nodes::InProcess(c) => c.stop_all(),
            Nodes::Processes { cluster, .. } => cluster.stop_all(),
        }
    }
}

/// Org1MSP User1's signing identity and client TLS config (trusting every org's TLS CA).
fn client_of(generated: &Generated) -> anyhow::Result<(SigningIdentity, ClientTlsConfig)> {
    let (msp, user) = ("Org1MSP", "User1");
    let u = generated
        .user(msp, user)
        .with_context(|| format!("no user {msp} {user}"))?;
    let identity = SigningIdentity::from_pem_files(msp, &u.cert, &u.key)?;
    let mut ca = Vec::new();
    for path in &generated.tls_ca_certs {
        ca.extend(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(
            std::fs::read(&u.tls_cert)?,
            std::fs::read(&u.tls_key)?,
        ))
        .domain_name("127.0.0.1");
    Ok((identity, tls))
}

/// `weft_orderer_blocks_cut_total{channel="CHANNEL",reason="R"} N` lines of a Prometheus text
/// exposition, per reason (labels in any order; reasons not listed count 0).
fn cuts_from_metrics(text: &str, channel: &str) -> orderer::cutter::CutCounts {
    let mut out = orderer::cutter::CutCounts::default();
    let channel_label = format!("channel=\"{channel}\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("weft_orderer_blocks_cut_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if !labels.split(',').any(|l| l.trim() == channel_label) {
            continue;
        }
        let reason = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("reason=\""))
            .and_then(|r| r.strip_suffix('"'));
        let value: Option<f64> = value.split_whitespace().next().and_then(|v| v.parse().ok());
        if let (Some(reason), Some(value)) = (reason, value) {
            if let Some(r) = orderer::cutter::CutReason::ALL
                .iter()
                .find(|r| r.as_str() == reason)
            {
                out[r.index()] = value as u64;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cut_parsed_from_metrics_text() {
        let text = "# HELP weft_orderer_blocks_cut_total Blocks cut.\n\
            # TYPE weft_orderer_blocks_cut_total counter\n\
            weft_orderer_blocks_cut_total{channel=\"mychannel\",reason=\"count\"} 12\n\
            weft_orderer_blocks_cut_total{reason=\"timeout\",channel=\"mychannel\"} 3\n\
            weft_orderer_blocks_cut_total{channel=\"other\",reason=\"count\"} 99\n\
            weft_orderer_height{channel=\"mychannel\"} 16\n";
        let cuts = cuts_from_metrics(text, "mychannel");
        let at = |name: &str| {
            orderer::cutter::CutReason::ALL
                .iter()
                .find(|r| r.as_str() == name)
                .map_or(u64::MAX, |r| cuts[r.index()])
        };
        assert_eq!((at("count"), at("timeout"), at("bytes")), (12, 3, 0));
    }
}
