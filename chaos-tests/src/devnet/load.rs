//! `devnet load`: the chaos workload ([`crate::run::load`]: SDK clients writing `kv` keys, one
//! raw Broadcast client) against a generated network, recording every transaction an orderer
//! acknowledged, and pausable from outside so that a checker can compare a quiet network with
//! what was acked (`devnet verify`).
//!
//! Control through files in the work directory (a volume when it runs as a container):
//!
//! ```text
//! pause   created by the operator: clients stop (in-flight calls end, bounded), then acked
//!         and summary are written, then state says "paused"; removing pause resumes (the
//!         material is read again, so orderers added meanwhile are used)
//! stop    created by the operator (or SIGTERM): as pause, then state "stopped" and exit
//! state   "running" | "paused" | "stopped" (replaced whole)
//! acked   every tx id an orderer acked since the start: "<tx id> <orderer>" per line
//! summary one line of counts: submitted, acked, committed VALID, refused, unknown
//! ```
//!
//! Every wait has a deadline: a call in flight at a pause gets [`STOP_DEADLINE`]; the whole
//! run ends after `max_seconds` even if nobody stops it.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use shared_proto::material::Generated;

use crate::history::History;
use crate::run::load;
use crate::run::load::Load;

/// How long clients in a call may take to finish it when the workload pauses or stops.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(200);

/// `devnet load` options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub network: PathBuf,
    pub dir: PathBuf,
    pub load: Load,
    /// The run ends by itself after this long.
    pub max_seconds: u64,
}

/// Writes `contents` to `dir/name`, replacing it whole (a reader sees the old or the new).
fn put(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let next = dir.join(format!(".{name}.next"));
    std::fs::write(&next, contents).with_context(|| format!("writing {}", next.display()))?;
    std::fs::rename(&next, dir.join(name)).with_context(|| format!("replacing {name}"))
}

/// The history's counts as `summary` holds them.
pub fn summary_line(history: &History) -> String {
    let valid = shared_proto::pb::tx::TxValidationCode::Valid as i32;
    let records = history.records();
    let count =
        |f: &dyn Fn(&crate::history::TxRecord) -> bool| records.iter().filter(|r| f(r)).count();
    format!(
        "submitted {}, acked {}, committed VALID {}, refused {}, unknown {}",
        count(&|r| r.submitted_t.is_some()),
        count(&|r| r.acked.is_some()),
        count(&|r| r.committed.as_ref().is_some_and(|c| c.code == valid)),
        count(&|r| r.failed.is_some()),
        count(&|r| !r.definite()),
    )
}

/// The `acked` file's contents.
pub fn acked_lines(history: &History) -> String {
    let mut out = String::new();
    for r in history.records() {
        if let Some((orderer, _)) = &r.acked {
            out.push_str(&format!("{} {orderer}\n", r.tx_id));
        }
    }
    out
}

/// Reads an `acked` file back: (tx id, orderer) per line.
pub fn read_acked(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next().unwrap_or_default().to_owned();
            let orderer = parts.next().unwrap_or("?").to_owned();
            anyhow::ensure!(
                id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: not a tx id: {l:?}",
                path.display()
            );
            Ok((id, orderer))
        })
        .collect()
}

/// Runs the workload until `stop` (file or SIGTERM) or `max_seconds`, pausing while `pause`
/// exists. See the module doc.
pub async fn run(o: LoadOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    let history = History::new();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(o.max_seconds);
    let terminated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let terminated = terminated.clone();
        tokio::spawn(async move {
            shared_proto::process::terminate().await;
            terminated.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let stopping =
        || terminated.load(std::sync::atomic::Ordering::SeqCst) || o.dir.join("stop").exists();
    loop {
        let g = Generated::load(&o.network)
            .with_context(|| format!("{} holds no generated network", o.network.display()))?;
        let running = load::start(&g, o.load, &history, t0)?;
        put(&o.dir, "state", "running\n")?;
        println!(
            "load running against {} orderers ({:.0} sdk tx/s, {:.0} raw tx/s)",
            g.orderers.len(),
            o.load.sdk_rate,
            o.load.raw_rate
        );
        while !stopping() && !o.dir.join("pause").exists() && Instant::now() < end {
            tokio::time::sleep(POLL_EVERY).await;
        }
        running.stop(STOP_DEADLINE).await;
        put(&o.dir, "acked", &acked_lines(&history))?;
        let summary = summary_line(&history);
        put(&o.dir, "summary", &format!("{summary}\n"))?;
        if stopping() || Instant::now() >= end {
            put(&o.dir, "state", "stopped\n")?;
            println!("load stopped: {summary}");
            return Ok(());
        }
        put(&o.dir, "state", "paused\n")?;
        println!("load paused: {summary}");
        while o.dir.join("pause").exists() && !stopping() && Instant::now() < end {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn acked_lines_read_back_and_only_acked_txs_are_listed() {
        let h = History::new();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        h.submitted(&a, 0, 0.1);
        h.acked(&a, "orderer1:7050", 0.2);
        h.committed(&a, 3, 0, 0.3);
        h.submitted(&b, 1, 0.1);
        h.timed_out(&b, "no orderer", 5.0);
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "acked", &acked_lines(&h)).unwrap();
        let back = read_acked(&dir.path().join("acked")).unwrap();
        assert_eq!(back, vec![(a, "orderer1:7050".to_owned())]);
        assert_eq!(
            summary_line(&h),
            "submitted 2, acked 1, committed VALID 1, refused 0, unknown 1"
        );
    }

    #[test]
    fn a_malformed_acked_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acked"), "not-a-tx orderer1\n").unwrap();
        assert!(read_acked(&dir.path().join("acked")).is_err());
    }
}
