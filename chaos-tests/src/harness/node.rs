//! One node of a harness cluster: a real process (`chaos node orderer|peer --config FILE`, the
//! same startup path as `orderer start` and `peer start`) or a container of the image running
//! `orderer start` / `peer start` (docker.rs), with the process faults a scenario applies:
//! SIGKILL, SIGSTOP/SIGCONT (the cgroup freezer for a container), graceful stop, restart, data
//! dir wiped; a container can also be taken off its network.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::clock::Skew;
use super::disk::SmallDisk;
use super::docker::Container;
use super::ports::Reservation;
use crate::launcher;
use crate::launcher::Kind;
use crate::launcher::NodeProcess;
use crate::topology::NodeView;

/// How long a graceful stop may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a node's process is doing, as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Paused,
    Stopped,
}

/// A node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub view: NodeView,
    /// The node's data dir (its config's `data_dir`).
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Its ports: bound until the node first starts, claimed as long as the node exists.
    reserved: Reservation,
    process: Option<NodeProcess>,
    /// The docker backend's container (then `process` stays `None`).
    container: Option<Container>,
    /// The container was started by the harness and not stopped since.
    container_started: bool,
    paused: bool,
    /// The container is off its network.
    disconnected: bool,
    /// Extra environment of the next start (e.g. `FAILPOINTS`).
    env: Vec<(String, String)>,
    /// The small disk its data dir is on during a disk-full fault.
    small_disk: Option<SmallDisk>,
    /// The executable of its last start (`chaos node …`), for [`super::NodeHandle::start`].
    exe: Option<PathBuf>,
}

impl Node {
    pub fn new(view: NodeView, data_dir: PathBuf, log: PathBuf, reserved: Reservation) -> Self {
        Node {
            view,
            data_dir,
            log,
            reserved,
            process: None,
            container: None,
            container_started: false,
            paused: false,
            disconnected: false,
            env: Vec::new(),
            small_disk: None,
            exe: None,
        }
    }

    /// The executable it is (or was last) started with.
    pub fn exe(&self) -> Option<&Path> {
        self.exe.as_deref()
    }

    /// Sets the executable its starts through [`super::NodeHandle`] use.
    pub fn set_exe(&mut self, exe: &Path) {
        self.exe = Some(exe.to_path_buf());
    }

    /// The node runs as `container` (the docker backend) from now on.
    pub fn set_container(&mut self, container: Container) {
        self.container = Some(container);
    }

    /// Sets an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Removes one variable of the extra environment.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// A variable of the extra environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Clears the extra environment.
    pub fn clear_env(&mut self) {
        self.env.clear();
    }

    pub fn name(&self) -> &str {
        &self.view.name
    }

    pub fn kind(&self) -> Kind {
        self.view.kind
    }

    pub fn state(&mut self) -> State {
        let alive = match &self.container {
            Some(c) => self.container_started && c.inspect().is_ok_and(|(running, _)| running),
            None => self.process.as_mut().is_some_and(|p| p.exited().is_none()),
        };
        match (alive, self.paused) {
            (false, _) => State::Stopped,
            (true, true) => State::Paused,
            (true, false) => State::Running,
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(NodeProcess::pid)
    }

    /// Whether the process exited on its own (not by the harness), and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(c) = &self.container {
            use std::os::unix::process::ExitStatusExt as _;
            if !self.container_started {
                return None;
            }
            let (running, code) = c.inspect().ok()?;
            if running {
                return None;
            }
            let _ = c.save_log();
            return Some(std::process::ExitStatus::from_raw((code & 0xff) << 8));
        }
        self.process.as_mut().and_then(NodeProcess::exited)
    }

    /// When the node's log says a bind failed ("Address already in use"), who holds each of its
    /// ports now, for the report (empty otherwise).
    pub fn port_conflicts(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(16 * 1024)..];
        if !String::from_utf8_lossy(tail).contains("Address already in use") {
            return String::new();
        }
        let mut out = String::from("; its ports now:");
        for port in self.reserved.ports() {
            let found = super::ports::holders(port);
            if found.is_empty() {
                out.push_str(&format!(" {port}: free;"));
            }
            for h in found {
                out.push_str(&format!(" {port}: {h};"));
            }
        }
        out
    }

    /// Starts the process (its ports' listeners are closed just before; their claims stay).
    pub fn start(&mut self, exe: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.state() == State::Stopped,
            "{} is already running",
            self.name()
        );
        self.reserved.open_for_node();
        self.exe = Some(exe.to_path_buf());
        if let Some(c) = &self.container {
            anyhow::ensure!(
                self.env.is_empty(),
                "{}: the docker backend does not set a node's environment ({})",
                self.view.name,
                self.env
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            c.start()?;
            self.container_started = true;
            self.paused = false;
            return Ok(());
        }
        let p = NodeProcess::spawn_with_env(
            exe,
            self.view.kind,
            &self.view.name,
            &self.view.config,
            &self.log,
            &self.env,
        )?;
        self.process = Some(p);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL: the process dies where it stands; nothing of its shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(c) = &self.container {
            if self.container_started {
                if let Err(e) = c.kill() {
                    eprintln!("{}: kill: {e:#}", self.view.name);
                }
            }
            self.container_started = false;
        }
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        self.paused = false;
    }

    /// SIGTERM (the graceful stop), SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if self.paused {
            let _ = self.resume();
        }
        if let Some(c) = &self.container {
            if self.container_started {
                if let Err(e) = c.stop() {
                    eprintln!("{}: stop: {e:#}", self.view.name);
                }
            }
            self.container_started = false;
        }
        if let Some(mut p) = self.process.take() {
            p.stop(STOP_GRACE);
        }
    }

    /// SIGSTOP: the process is frozen, its sockets stay open.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &self.container {
            c.pause()?;
            self.paused = true;
            return Ok(());
        }
        let p = self
            .process
            .as_ref()
            .with_context(|| format!("{} is not running", self.view.name))?;
        p.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &self.container {
            if self.paused {
                c.unpause()?;
            }
            self.paused = false;
            return Ok(());
        }
        if let Some(p) = self.process.as_ref() {
            p.signal("CONT")?;
        }
        self.paused = false;
        Ok(())
    }

    /// Takes the node's container off its network (the docker backend only).
    pub fn disconnect(&mut self) -> anyhow::Result<()> {
        let c = self.container.as_ref().with_context(|| {
            format!(
                "{}: disconnecting a node needs the docker backend",
                self.view.name
            )
        })?;
        c.disconnect()?;
        self.disconnected = true;
        Ok(())
    }

    /// Puts a disconnected container back on its network.
    pub fn reconnect(&mut self) -> anyhow::Result<()> {
        if let (Some(c), true) = (&self.container, self.disconnected) {
            c.connect()?;
        }
        self.disconnected = false;
        Ok(())
    }

    /// Deletes the node's data dir; the node must be stopped.
    pub fn wipe(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.state() == State::Stopped,
            "{} must be stopped before its data dir is wiped",
            self.name()
        );
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)
                .with_context(|| format!("wiping {}", self.data_dir.display()))?;
        }
        Ok(())
    }

    /// `GET /status` of its ops endpoint.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        launcher::status(&self.view.ops).await
    }

    /// Whether `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(
            launcher::http_get(&self.view.ops, "/readyz").await,
            Ok((200, _))
        )
    }

    /// Its next starts run with the wall clock skewed by libfaketime at `lib`
    /// ([`super::clock`]).
    pub fn set_clock_skew(&mut self, lib: &Path, skew: Skew) {
        let preload = self.env("LD_PRELOAD").map(str::to_owned);
        for (k, v) in skew.env(lib, preload.as_deref()) {
            self.set_env(&k, &v);
        }
    }

    /// Its next starts run on the real clock (another preloaded library stays).
    pub fn clear_clock_skew(&mut self) {
        match self
            .env("LD_PRELOAD")
            .and_then(super::clock::unskewed_preload)
        {
            Some(rest) => self.set_env("LD_PRELOAD", &rest),
            None => self.remove_env("LD_PRELOAD"),
        }
        for k in super::clock::skew_vars() {
            self.remove_env(k);
        }
    }

    /// Moves its data dir onto a tmpfs with `headroom` bytes free ([`super::disk`]); the node
    /// must be stopped. Returns the small disk's size.
    pub fn move_to_small_disk(&mut self, headroom: u64) -> anyhow::Result<u64> {
        anyhow::ensure!(
            self.state() == State::Stopped,
            "{} must be stopped before its data dir moves",
            self.name()
        );
        anyhow::ensure!(
            self.small_disk.is_none(),
            "{} is on a small disk already",
            self.name()
        );
        let disk = SmallDisk::move_onto(&self.data_dir, headroom)?;
        let size = disk.size;
        self.small_disk = Some(disk);
        Ok(size)
    }

    /// (used, available) bytes of its small disk, if it is on one.
    pub fn small_disk_usage(&self) -> Option<anyhow::Result<(u64, u64)>> {
        self.small_disk.as_ref().map(SmallDisk::usage)
    }

    /// Moves its data dir back onto the normal disk; the node must be stopped.
    pub fn give_disk_room(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.state() == State::Stopped,
            "{} must be stopped before its data dir moves",
            self.name()
        );
        match self.small_disk.take() {
            Some(disk) => disk.give_room(),
            None => Ok(()),
        }
    }
}
