//! A small disk under a node: its data dir moved onto a tmpfs with only `headroom` bytes free
//! (`mount -t tmpfs -o size=…`, root only), so the node's next writes fill it; then moved back
//! onto the normal disk (the operator giving it room). The node is stopped for both moves.
//!
//! ```text
//! DATA (on disk) ──rename──▶ DATA.on-disk;  mount tmpfs on DATA;  cp -a DATA.on-disk/. DATA
//!   ──▶ remount size = used + headroom;  rm DATA.on-disk                       (small disk)
//! DATA (tmpfs) ──cp -a──▶ DATA.given-room;  umount DATA;  rmdir DATA;  rename back  (room)
//! ```
//!
//! A disk still mounted when its handle drops is unmounted (lazily) so no run leaves a mount
//! behind.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// Page size: tmpfs sizes are whole pages.
const PAGE: u64 = 4096;

/// A data dir on a size-limited tmpfs.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
    /// The filesystem's size, bytes.
    pub size: u64,
    mounted: bool,
}

/// Runs `cmd`, failing with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        stderr.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

fn mount_tmpfs(dir: &Path, size: u64) -> anyhow::Result<()> {
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={size},mode=0755"))
        .arg("chaos-small-disk")
        .arg(dir))
}

fn unmount(dir: &Path) -> anyhow::Result<()> {
    run(Command::new("umount").arg(dir))
}

/// Copies the contents of `from` into the existing dir `to`, keeping modes and times.
fn copy_contents(from: &Path, to: &Path) -> anyhow::Result<()> {
    run(Command::new("cp").arg("-a").arg(from.join(".")).arg(to))
}

/// (used, available) bytes of the filesystem holding `dir`.
pub fn usage(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("df")
        .args(["-B1", "--output=used,avail"])
        .arg(dir)
        .output()
        .context("running df")?;
    anyhow::ensure!(out.status.success(), "df {}: {}", dir.display(), out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .lines()
        .nth(1)
        .context("df printed no figures")?
        .split_whitespace()
        .map(str::parse::<u64>);
    match (nums.next(), nums.next()) {
        (Some(Ok(used)), Some(Ok(avail))) => Ok((used, avail)),
        _ => anyhow::bail!("unreadable df output: {text}"),
    }
}

/// Bytes the files under `dir` take (whole pages).
fn footprint(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            footprint(&entry.path())? + PAGE
        } else {
            meta.len().div_ceil(PAGE) * PAGE
        };
    }
    Ok(total)
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Whether this machine lets the harness mount a tmpfs; `Err` says why not (mount's own
/// words). Tries a 64 KiB one under `scratch`.
pub fn probe(scratch: &Path) -> Result<(), String> {
    let dir = scratch.join(format!("chaos-mount-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mounted = mount_tmpfs(&dir, 16 * PAGE).map_err(|e| format!("{e:#}"));
    if mounted.is_ok() {
        let _ = unmount(&dir);
    }
    let _ = std::fs::remove_dir(&dir);
    mounted.map_err(|e| format!("cannot mount a size-limited tmpfs (root only): {e}"))
}

impl SmallDisk {
    /// Moves the (stopped) node's `data_dir` onto a tmpfs with `headroom` bytes free.
    pub fn move_onto(data_dir: &Path, headroom: u64) -> anyhow::Result<SmallDisk> {
        let on_disk = sibling(data_dir, ".on-disk");
        std::fs::create_dir_all(data_dir)?;
        std::fs::rename(data_dir, &on_disk)
            .with_context(|| format!("moving {} aside", data_dir.display()))?;
        std::fs::create_dir(data_dir)?;
        let mut disk = SmallDisk {
            dir: data_dir.to_path_buf(),
            size: 0,
            mounted: false,
        };
        let filled = (|| {
            let size = (footprint(&on_disk)? + headroom).div_ceil(PAGE) * PAGE + 256 * PAGE;
            mount_tmpfs(data_dir, size)?;
            disk.mounted = true;
            copy_contents(&on_disk, data_dir)?;
            let (used, _) = usage(data_dir)?;
            disk.size = (used + headroom).div_ceil(PAGE) * PAGE;
            run(Command::new("mount")
                .arg("-o")
                .arg(format!("remount,size={}", disk.size))
                .arg(data_dir))
        })();
        if let Err(e) = filled {
            // Put the data back where it was.
            if disk.mounted && unmount(data_dir).is_ok() {
                disk.mounted = false;
            }
            if !disk.mounted {
                let _ = std::fs::remove_dir(data_dir);
                let _ = std::fs::rename(&on_disk, data_dir);
            }
            return Err(e.context(format!("putting {} on a small disk", data_dir.display())));
        }
        std::fs::remove_dir_all(&on_disk)?;
        Ok(disk)
    }

    /// (used, available) bytes now.
    pub fn usage(&self) -> anyhow::Result<(u64, u64)> {
        usage(&self.dir)
    }

    /// Moves the data back onto the normal disk (the node must be stopped) and unmounts.
    pub fn give_room(mut self) -> anyhow::Result<()> {
        let moved = sibling(&self.dir, ".given-room");
        if moved.exists() {
            std::fs::remove_dir_all(&moved)?;
        }
        std::fs::create_dir(&moved)?;
        copy_contents(&self.dir, &moved)
            .with_context(|| format!("copying {} off its small disk", self.dir.display()))?;
        unmount(&self.dir)?;
        self.mounted = false;
        std::fs::remove_dir(&self.dir)?;
        std::fs::rename(&moved, &self.dir)
            .with_context(|| format!("moving {} back", self.dir.display()))?;
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
