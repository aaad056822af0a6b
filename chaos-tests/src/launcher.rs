//! Process launcher: runs orderer and peer nodes as child processes (this executable re-run
//! with `node orderer|peer --config FILE`), logs to files, stops them with SIGTERM (then
//! SIGKILL after a grace period) when dropped. Also tiny HTTP helpers for the ops ports.

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;

/// Which node binary logic a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Orderer,
    Peer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Orderer => "orderer",
            Kind::Peer => "peer",
        }
    }
}

/// A running node process.
#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    pub kind: Kind,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts `exe node <kind> --config <config>` with stdout and stderr appended to `log`.
    pub fn spawn(
        exe: &Path,
        kind: Kind,
        name: &str,
        config: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(exe, kind, name, config, log, &[])
    }

    /// [`NodeProcess::spawn`] with extra environment variables (e.g. `FAILPOINTS`).
    pub fn spawn_with_env(
        exe: &Path,
        kind: Kind,
        name: &str,
        config: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let args = ["node".to_owned(), kind.as_str().to_owned()];
        Self::spawn_program(exe, &args, kind, name, config, log, env)
    }

    /// Starts `program ARGS --config <config>` (e.g. the `orderer` binary with `start`, as an
    /// operator runs it, or a profiler wrapping it), otherwise as [`NodeProcess::spawn_with_env`].
    pub fn spawn_program(
        program: &Path,
        args: &[String],
        kind: Kind,
        name: &str,
        config: &Path,
        log: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let child = node_command(program, args, config, log)?
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(profile_env(name))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(NodeProcess {
            name: name.to_owned(),
            kind,
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// The OS process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and with what).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, then reaped: the process dies where it stands (no shutdown path runs).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (a name `kill -s` takes: `STOP`, `CONT`, `TERM`) to the running process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the process is not running")?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -s {signal} {pid}: {status}");
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Names the node (as the bench and devnet name it, e.g. `Org1MSP/peer0`) that gets the
/// environment in [`PROFILE_ENV`]: a profiler preloaded into one node of a run, e.g. heaptrack's
/// `LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so;DUMP_HEAPTRACK_OUTPUT=FIFO`
/// (docs/performance.md, "Round 3", "Node memory").
pub const PROFILE_NODE: &str = "WEFT_PROFILE_NODE";
/// `KEY=VALUE` pairs, separated by `;`, set for the node [`PROFILE_NODE`] names only.
pub const PROFILE_ENV: &str = "WEFT_PROFILE_ENV";

/// The extra environment of node `name` (see [`PROFILE_NODE`]); empty for every other node.
fn profile_env(name: &str) -> Vec<(String, String)> {
    if std::env::var(PROFILE_NODE).ok().as_deref() != Some(name) {
        return Vec::new();
    }
    std::env::var(PROFILE_ENV)
        .unwrap_or_default()
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

/// `program ARGS --config <config>`, stdin closed, stdout and stderr appended to `log`.
fn node_command(
    program: &Path,
    args: &[String],
    config: &Path,
    log: &Path,
) -> anyhow::Result<Command> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(command)
}

/// Starts a node like [`NodeProcess::spawn`] but detached: in its own process group (a Ctrl-C
/// meant for the caller's terminal does not reach it) and not stopped by anything here, so it
/// outlives the caller. Returns its process id; stopping it is up to whoever records that.
pub fn spawn_detached(exe: &Path, kind: Kind, config: &Path, log: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let args = ["node".to_owned(), kind.as_str().to_owned()];
    let child = node_command(exe, &args, config, log)?
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} {}", kind.as_str(), config.display()))?;
    // Not waited for here: the process runs on after this one exits.
    Ok(child.id())
}

/// Whether `addr` answers `GET /healthz` with 200 (the process serves).
pub async fn serves(addr: &str) -> bool {
    matches!(http_get(addr, "/healthz").await, Ok((200, _)))
}

/// GET `path` from an HTTP/1.1 server at `addr`; returns (status, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .context("read timeout")??;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The JSON `/status` of a node's ops port.
pub async fn status(addr: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = http_get(addr, "/status").await?;
    anyhow::ensure!(code == 200, "status {code}");
    Ok(serde_json::from_str(&body)?)
}

/// Resident set of a process, MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rss {
    /// `VmRSS`: now.
    pub current: f64,
    /// `VmHWM`: the peak so far.
    pub peak: f64,
}

/// The resident set of process `pid` from `/proc/<pid>/status` (`None` if it is gone).
pub fn rss_mib(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(Rss {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// The first port of `count` consecutive free ports on 127.0.0.1, searched from 20000.
pub fn free_port_range(count: u16) -> anyhow::Result<u16> {
    let mut base: u16 = 20_000;
    while base < 60_000 {
        let free = (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return Ok(base);
        }
        base += count;
    }
    anyhow::bail!("no {count} consecutive free ports between 20000 and 60000")
}

/// Waits until every node answers `/readyz` with 200; fails if a process exits or `timeout`
/// passes.
pub async fn wait_ready(
    nodes: &[crate::topology::NodeView],
    procs: &mut [NodeProcess],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                anyhow::bail!("{} exited ({status}); see {}", p.name, p.log.display());
            }
        }
        let mut ready = 0;
        for v in nodes {
            if let Ok((200, _)) = http_get(&v.ops, "/readyz").await {
                ready += 1;
            }
        }
        if ready == nodes.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {} nodes became ready",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
