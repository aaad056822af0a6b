//! Power-cut emulation. A SIGKILL leaves the page cache to the kernel, which writes it out
//! later, so a killed process loses nothing it wrote; a machine that loses power loses every
//! write that was not fsynced. For a scenario with a power cut, the orderers run with a small
//! `LD_PRELOAD` library (`powercut.c`, built here with the system's C compiler) that logs, for
//! every file under the node's data dir, its size when opened for writing and at every
//! successful `fsync`/`fdatasync`, and renames. A power cut is a SIGKILL followed by
//! truncating each file to its last durable size (a file created and never synced to zero).
//!
//! What it models: lost unsynced appends and unsynced new files (how journals and logs lose
//! data). What it does not: an overwrite inside a file's synced part, a rename or create lost
//! for want of a directory fsync. The nodes append only, so the first is not a gap; the
//! second makes the emulation lenient, never harsher than a real cut.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;

/// The library's C source.
const SOURCE: &str = include_str!("powercut.c");
/// The variables the library reads.
const ENV_DIR: &str = "WEFT_POWERCUT_DIR";
const ENV_LOG: &str = "WEFT_POWERCUT_LOG";

/// Builds the library into `dir` (once per run); its path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("powercut.c");
    let lib = dir.join("libpowercut.so");
    std::fs::write(&src, SOURCE)?;
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .context(
            "power-cut emulation builds an LD_PRELOAD library with the system's C compiler \
             (cc), which could not be run; install gcc",
        )?;
    anyhow::ensure!(
        out.status.success(),
        "cc could not build {}: {}",
        lib.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(lib)
}

/// Where a node's durability log lies.
pub fn log_of(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map_or_else(|| "node".into(), |n| n.to_string_lossy().into_owned());
    data_dir.with_file_name(format!("{name}.powercut.log"))
}

/// The environment that makes a node's process log its durability (its data dir is created
/// first: the library resolves it at start).
pub fn env(lib: &Path, data_dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    std::fs::create_dir_all(data_dir)?;
    Ok(vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        (ENV_DIR.into(), data_dir.display().to_string()),
        (ENV_LOG.into(), log_of(data_dir).display().to_string()),
    ])
}

/// What a cut dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub files: u64,
    pub bytes: u64,
}

/// The durable size of every file the log names, from its events in order.
///
/// At an fsync through a descriptor open for writing, what is durable is what was written:
/// the write position, when it is short of the size (a preallocated file: fjall makes its
/// journals 64 MiB long before writing them), or the size at open when nothing was written
/// yet. Through a read-only descriptor, the whole file.
fn durable_sizes(log: &str) -> anyhow::Result<BTreeMap<PathBuf, u64>> {
    let mut durable: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut at_open: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let lines: Vec<&str> = log.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        let number = |text: &str| -> anyhow::Result<u64> {
            text.parse()
                .with_context(|| format!("log line {}: {line:?}", n + 1))
        };
        match fields.as_slice() {
            ["O", size, path] => {
                // Only the first open of a path counts: later opens see what this process
                // wrote, not what is on disk.
                let size = number(size)?;
                at_open.entry(PathBuf::from(path)).or_insert(size);
                durable.entry(PathBuf::from(path)).or_insert(size);
            }
            ["S", size, pos, mode, path] => {
                let (size, pos) = (number(size)?, number(pos)?);
                let path = PathBuf::from(path);
                let synced = match (*mode, pos) {
                    ("w", 0) => at_open.get(&path).copied().unwrap_or(size).min(size),
                    ("w", pos) => pos.min(size),
                    _ => size,
                };
                durable.insert(path, synced);
            }
            ["R", from, to] => {
                for map in [&mut durable, &mut at_open] {
                    match map.remove(Path::new(from)) {
                        Some(size) => map.insert(PathBuf::from(to), size),
                        None => map.remove(Path::new(to)),
                    };
                }
            }
            // A line cut short by the SIGKILL itself.
            _ if n + 1 == lines.len() => {}
            _ => anyhow::bail!("log line {}: {line:?}", n + 1),
        }
    }
    Ok(durable)
}

/// Cuts the power of a stopped node: every file its process wrote is truncated to its last
/// durable size; the log is kept aside and the next process starts a new one.
pub fn cut(data_dir: &Path) -> anyhow::Result<Dropped> {
    let log_path = log_of(data_dir);
    let log = match std::fs::read_to_string(&log_path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", log_path.display())),
    };
    let mut dropped = Dropped::default();
    for (path, size) in durable_sizes(&log)? {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // deleted since
        };
        if meta.is_file() && meta.len() > size {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(size))
                .with_context(|| format!("truncating {}", path.display()))?;
            dropped.files += 1;
            dropped.bytes += meta.len() - size;
        }
    }
    // Kept for the post-mortem as `NAME.powercut.log.N`; the next process starts a new one.
    if log_path.exists() {
        let kept = (1..)
            .map(|n| PathBuf::from(format!("{}.{n}", log_path.display())))
            .find(|p| !p.exists())
            .context("no free name for the old log")?;
        std::fs::rename(&log_path, &kept)
            .with_context(|| format!("moving {} aside", log_path.display()))?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durable_size_is_what_was_synced_and_follows_renames() {
        let log = "O\t10\t/d/journal\nO\t40\t/d/journal\nS\t25\t25\tw\t/d/journal\n\
                   O\t0\t/d/v.tmp\nS\t7\t7\tw\t/d/v.tmp\nR\t/d/v.tmp\t/d/version\n\
                   O\t0\t/d/new\nR\t/d/gone.tmp\t/d/version2\n\
                   O\t0\t/d/0.jnl\nS\t1000\t0\tw\t/d/0.jnl\nS\t1000\t300\tw\t/d/0.jnl\n\
                   S\t9\t0\tr\t/d/current\nS\t3";
        let d = durable_sizes(log).unwrap();
        assert_eq!(d[Path::new("/d/journal")], 25);
        assert_eq!(d[Path::new("/d/version")], 7);
        assert_eq!(d[Path::new("/d/new")], 0);
        // Preallocated to 1000, 300 written when last synced.
        assert_eq!(d[Path::new("/d/0.jnl")], 300);
        // Synced through a read-only descriptor: all of it.
        assert_eq!(d[Path::new("/d/current")], 9);
        assert!(!d.contains_key(Path::new("/d/v.tmp")));
        assert!(!d.contains_key(Path::new("/d/version2")));
        assert!(durable_sizes("X\t1\n\nO\t1\t/a\n").is_err());
    }

    /// A real process with the library: what it fsynced survives the cut, what it only wrote
    /// does not.
    #[test]
    fn unsynced_appends_are_lost_and_synced_ones_kept_by_a_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let Ok(lib) = build(&tmp.path().join("lib")) else {
            eprintln!("skipped: no C compiler to build the power-cut library");
            return;
        };
        let data = tmp.path().join("data");
        let script = "cd \"$WEFT_POWERCUT_DIR\" && printf synced > kept && \
                      python3 -c 'import os; f=open(\"kept\",\"ab\"); f.write(b\"+more\"); f.flush(); os.fsync(f.fileno()); f.write(b\"-lost\"); f.flush()' && \
                      printf never > fresh";
        let status = std::process::Command::new("sh")
            .args(["-c", script])
            .envs(env(&lib, &data).unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read(data.join("kept")).unwrap(),
            b"synced+more-lost"
        );
        let dropped = cut(&data).unwrap();
        assert_eq!(std::fs::read(data.join("kept")).unwrap(), b"synced+more");
        assert_eq!(std::fs::read(data.join("fresh")).unwrap(), b"");
        assert_eq!(
            dropped,
            Dropped {
                files: 2,
                bytes: 10
            }
        );
    }
}
