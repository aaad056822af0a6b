//! The container backend: each node of a harness cluster runs as a container of the image
//! `deploy/build-image.sh` builds (`orderer start` / `peer start`, the operator's command), on
//! a Docker network of its own with a fixed address per node, so that the material names
//! addresses the harness on the host can dial too.
//!
//! ```text
//! DockerNet::create ── a bridge network 10.213.N.0/24 (N free), gateway .1
//!   Container::create ── `docker create --network NET --ip 10.213.N.(10+i)`, the run's
//!                        directory mounted at the same path (configs name absolute paths)
//!   start / kill (SIGKILL) / stop (SIGTERM, then SIGKILL) / pause / unpause (cgroup freezer)
//!   disconnect / connect ── `docker network disconnect|connect`: every link of the node cut
//! ```
//!
//! Every `docker` call has a deadline; dropping a container or the network removes it.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;

use crate::launcher::Kind;

/// How long one `docker` command may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(60);
/// The user the image runs as (deploy/build-image.sh): the mounted run directory is given to it.
pub const IMAGE_UID: u32 = 10001;

/// Runs `docker ARGS` and returns its stdout; fails with its stderr or at the deadline.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("docker");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_with_deadline(&mut cmd, &format!("docker {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cmd` to its end, killed at [`DOCKER_DEADLINE`].
fn run_with_deadline(cmd: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("running {what} (is docker installed?)"))?;
    let end = Instant::now() + DOCKER_DEADLINE;
    while child.try_wait()?.is_none() {
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{what} did not finish within {} s",
                DOCKER_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// Why the container backend cannot run here, if it cannot: no engine, or no image.
pub fn unavailable(image: &str) -> Option<String> {
    if docker(&["info", "--format", "{{.ServerVersion}}"]).is_err() {
        return Some(
            "the docker backend needs a Docker engine; none answers (docker info failed)".into(),
        );
    }
    if docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_err() {
        return Some(format!(
            "the docker backend needs the image {image}; build it with `deploy/build-image.sh` \
             (IMAGE={image})"
        ));
    }
    None
}

/// A bridge network with a subnet of the harness's choosing (fixed addresses need one).
#[derive(Debug)]
pub struct DockerNet {
    pub name: String,
    /// The first three octets, e.g. `10.213.7`.
    prefix: String,
}

impl DockerNet {
    /// Creates `name` on the first free 10.213.N.0/24.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let start = std::process::id() % 200;
        let mut last = None;
        for k in 0..50 {
            let n = (start + k) % 250 + 1;
            let prefix = format!("10.213.{n}");
            let subnet = format!("{prefix}.0/24");
            match docker(&[
                "network", "create", "--driver", "bridge", "--subnet", &subnet, name,
            ]) {
                Ok(_) => {
                    return Ok(DockerNet {
                        name: name.to_owned(),
                        prefix,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no subnet tried")))
            .context("creating the cluster's docker network (no free 10.213.N.0/24?)")
    }

    /// The address of node `i` (0-based).
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }
}

impl Drop for DockerNet {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// One node's container.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    network: String,
    ip: String,
    /// Where `docker logs` is copied when the container is removed.
    log: PathBuf,
}

impl Container {
    /// Creates (does not start) the container of a node: `kind start --config config`, with
    /// `mount` (the run's directory, holding its config, material and data dir) at the same
    /// path.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        name: &str,
        image: &str,
        net: &DockerNet,
        ip: &str,
        kind: Kind,
        config: &Path,
        mount: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let _ = docker(&["rm", "-f", name]);
        let volume = format!("{}:{}", mount.display(), mount.display());
        let config = config.display().to_string();
        docker(&[
            "create",
            "--name",
            name,
            "--network",
            &net.name,
            "--ip",
            ip,
            "--volume",
            &volume,
            "--stop-timeout",
            "10",
            image,
            kind.as_str(),
            "start",
            "--config",
            &config,
        ])?;
        Ok(Container {
            name: name.to_owned(),
            network: net.name.clone(),
            ip: ip.to_owned(),
            log: log.to_path_buf(),
        })
    }

    pub fn start(&self) -> anyhow::Result<()> {
        docker(&["start", &self.name]).map(drop)
    }

    /// SIGKILL to the node's process (PID 1 of the container).
    pub fn kill(&self) -> anyhow::Result<()> {
        docker(&["kill", "--signal", "KILL", &self.name]).map(drop)
    }

    /// SIGTERM, SIGKILL after the stop timeout.
    pub fn stop(&self) -> anyhow::Result<()> {
        docker(&["stop", &self.name]).map(drop)
    }

    /// Freezes every process of the container (cgroup freezer); its sockets stay open.
    pub fn pause(&self) -> anyhow::Result<()> {
        docker(&["pause", &self.name]).map(drop)
    }

    pub fn unpause(&self) -> anyhow::Result<()> {
        docker(&["unpause", &self.name]).map(drop)
    }

    /// Takes the container off its network: every link to and from it is gone.
    pub fn disconnect(&self) -> anyhow::Result<()> {
        docker(&[
            "network",
            "disconnect",
            "--force",
            &self.network,
            &self.name,
        ])
        .map(drop)
    }

    /// Puts it back on its network at its address.
    pub fn connect(&self) -> anyhow::Result<()> {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip,
            &self.network,
            &self.name,
        ])
        .map(drop)
    }

    /// `(running, exit code)` as Docker reports them.
    pub fn inspect(&self) -> anyhow::Result<(bool, i32)> {
        let out = docker(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.name,
        ])?;
        let (running, code) = out.split_once(' ').context("docker inspect output")?;
        Ok((running == "true", code.parse().unwrap_or(-1)))
    }
}

impl Container {
    /// Copies what the node printed so far (`docker logs`, both streams) to its log file.
    pub fn save_log(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let mut cmd = Command::new("docker");
        cmd.args(["logs", &self.name])
            .stdout(file.try_clone()?)
            .stderr(file);
        run_with_deadline(&mut cmd, "docker logs").map(drop)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.save_log();
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// Gives the run's directory to the image's user, so the containers can write their data dirs.
pub fn give_to_image_user(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .args(["-R", &format!("{IMAGE_UID}:{IMAGE_UID}")])
        .arg(dir)
        .status()
        .context("running chown")?;
    anyhow::ensure!(
        status.success(),
        "chown -R {IMAGE_UID} {} failed",
        dir.display()
    );
    Ok(())
}
