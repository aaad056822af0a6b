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
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(["node", kind.as_str(), "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(NodeProcess {
            name: name.to_owned(),
            kind,
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// Whether the process has exited (and with what).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
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
