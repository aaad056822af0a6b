//! The dev network's operator verbs: they act on the network a `devnet --data-dir DIR` runs.
//!
//! ```text
//! add-orderer / add-peer / add-org / create-channel
//!   │ the running network: at least one orderer of DIR/net answers /healthz
//!   ├─▶ material: shared_proto::material::add_* (issued by the orgs' CAs in DIR/net,
//!   │   appended to DIR/net/network.toml; nothing existing rewritten)
//!   ├─▶ config update, orderer channel join: orderer::admin_client (signed by the orgs'
//!   │   Admins); peer channel join: peer::participation::client (the peer's org Admin)
//!   └─▶ a new node: `devnet node KIND --config ...` detached (it outlives the verb), log in
//!       DIR/logs/NAME.log, pid in DIR/pids/NAME.pid; the verb waits until it serves
//! ```
//!
//! For networks whose nodes something else runs (compose, Kubernetes), material-only verbs
//! ([`extend`]: `extend`, `renew-tls`), a pausable recording workload with its checker
//! ([`load`], [`verify`]: `load`, `verify`) and [`broadcast`] (envelopes to one orderer) act
//! on a generated network's directory alone.
//!
//! The `devnet` that runs the network stops every recorded node when it stops
//! ([`stop_recorded`]); a node whose process is gone leaves a stale record that the next
//! `devnet` run clears.

pub mod broadcast;
mod channel;
pub mod extend;
pub mod load;
mod nodes;
mod org;
pub mod verify;

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
pub use channel::create_channel;
pub use nodes::add_orderer;
pub use nodes::add_peer;
pub use org::add_org;
use shared_proto::material::Generated;

use crate::launcher;
use crate::launcher::Kind;
use crate::topology::nodes;
use crate::topology::NodeView;

/// How long a new node may take to serve (`/healthz`).
const SERVE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a new peer may take to reach the orderers' height.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(90);
/// How long a config update may take to be ordered and applied.
const CONFIG_UPDATE_DEADLINE: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(200);

/// A dev network's data dir: material in `net/`, logs in `logs/`, started nodes in `pids/`.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
        }
    }

    pub fn net(&self) -> PathBuf {
        self.root.join("net")
    }

    pub fn log_of(&self, name: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{}.log", file_name(name)))
    }

    fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// The network's material; fails unless some orderer of it serves (a running devnet).
    pub async fn running(&self) -> anyhow::Result<Generated> {
        let net = self.net();
        let generated = Generated::load(&net).with_context(|| {
            format!(
                "{} holds no dev network (start one with `devnet --data-dir {}`)",
                self.root.display(),
                self.root.display()
            )
        })?;
        for view in nodes(&generated).iter().filter(|v| v.kind == Kind::Orderer) {
            if launcher::serves(&view.ops).await {
                return Ok(generated);
            }
        }
        anyhow::bail!(
            "no orderer of the network in {} answers /healthz: is `devnet --data-dir {}` running?",
            self.root.display(),
            self.root.display()
        )
    }
}

/// `Org1MSP/peer2` as a file name.
fn file_name(name: &str) -> String {
    name.replace('/', "-")
}

/// `count` ports that are free now (bound on port 0 together, then released) and that no
/// node of `g` is configured with.
pub fn free_ports(g: &Generated, count: usize) -> anyhow::Result<Vec<u16>> {
    let taken: Vec<u16> = nodes(g).iter().flat_map(|v| v.ports.clone()).collect();
    for _ in 0..16 {
        let listeners = (0..count)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .collect::<Result<Vec<_>, _>>()
            .context("binding port 0")?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        if ports.iter().all(|p| !taken.contains(p)) {
            return Ok(ports);
        }
    }
    anyhow::bail!("no {count} free ports outside the network's own after 16 tries")
}

/// A node started by a verb, recorded so that the running devnet's stop finds it.
#[derive(Debug)]
pub struct Started {
    pub view: NodeView,
    pub pid: u32,
    pub log: PathBuf,
}

/// Starts `view` detached (see [`launcher::spawn_detached`]), records its pid, and waits until
/// it serves; fails (naming its log) if it exits first or does not serve within
/// [`SERVE_DEADLINE`].
pub async fn start_node(data: &DataDir, view: &NodeView) -> anyhow::Result<Started> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let log = data.log_of(&view.name);
    let pid = launcher::spawn_detached(&exe, view.kind, &view.config, &log)?;
    let record = data.pids().join(format!("{}.pid", file_name(&view.name)));
    std::fs::create_dir_all(data.pids())?;
    std::fs::write(&record, format!("{pid}\n{}\n", view.config.display()))
        .with_context(|| format!("recording pid in {}", record.display()))?;
    let deadline = Instant::now() + SERVE_DEADLINE;
    loop {
        if !alive(pid) {
            anyhow::bail!(
                "{} (pid {pid}) exited before serving; its log {} ends:\n{}",
                view.name,
                log.display(),
                tail(&log, 15)
            );
        }
        if launcher::serves(&view.ops).await {
            return Ok(Started {
                view: view.clone(),
                pid,
                log,
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} (pid {pid}) does not answer http://{}/healthz after {} s; see {}",
            view.name,
            view.ops,
            SERVE_DEADLINE.as_secs(),
            log.display()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The last `lines` lines of `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// A recorded node: its pid, whether it is still the process that was started (its command
/// line names the recorded config), and the record's path.
fn records(data: &DataDir) -> Vec<(u32, bool, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(data.pids()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut lines = text.lines();
        let Some(pid) = lines.next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            continue;
        };
        let config = lines.next().unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours =
            alive(pid) && !config.is_empty() && String::from_utf8_lossy(&cmdline).contains(config);
        out.push((pid, ours, path));
    }
    out
}

/// Stops every node the verbs recorded in `data` that still runs (SIGTERM, then SIGKILL after
/// `grace`) and removes the records; returns how many it stopped. A record whose process is
/// gone, or whose pid now belongs to another program, is only removed.
pub fn stop_recorded(data: &DataDir, grace: Duration) -> usize {
    let recorded = records(data);
    let running: Vec<u32> = recorded
        .iter()
        .filter(|(_, ours, _)| *ours)
        .map(|(pid, _, _)| *pid)
        .collect();
    signal(&running, "-TERM");
    let deadline = Instant::now() + grace;
    while running.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = running.iter().copied().filter(|p| alive(*p)).collect();
    signal(&left, "-KILL");
    for (_, _, path) in &recorded {
        let _ = std::fs::remove_file(path);
    }
    running.len()
}

/// Removes the records of nodes that no longer run (left by a devnet that did not stop
/// cleanly); live ones stay.
pub fn clear_stale(data: &DataDir) {
    for (_, ours, path) in records(data) {
        if !ours {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn signal(pids: &[u32], which: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(which)
        .args(pids.iter().map(u32::to_string))
        .status();
}

/// Polls `view`'s `/status` until `done` says so, or fails after `deadline` naming `what` and
/// the last answer.
async fn wait_status(
    view: &NodeView,
    what: &str,
    deadline: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let end = Instant::now() + deadline;
    loop {
        let last = match launcher::status(&view.ops).await {
            Ok(s) if done(&s) => return Ok(s),
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        anyhow::ensure!(
            Instant::now() < end,
            "{}: {what} not seen within {} s; its last /status: {last}",
            view.name,
            deadline.as_secs()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `view` of `g` called `name` (`orderer4`, `Org1MSP/peer2`).
fn view_of(g: &Generated, name: &str) -> anyhow::Result<NodeView> {
    nodes(g)
        .into_iter()
        .find(|v| v.name == name)
        .with_context(|| format!("{name} is not in the network's material after adding it"))
}

/// One line per channel of a node's `/status`: height, and role for an orderer.
fn describe_channels(status: &serde_json::Value) -> Vec<String> {
    let Some(channels) = status["channels"].as_object() else {
        return Vec::new();
    };
    channels
        .iter()
        .map(|(id, ch)| {
            let role = ch["role"]
                .as_str()
                .map(|r| format!("role {r}, "))
                .unwrap_or_default();
            format!("{id}: {role}height {}", ch["height"].as_u64().unwrap_or(0))
        })
        .collect()
}
