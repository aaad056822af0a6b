//! Disk corruption of a stopped node: its fjall journal truncated or bit-flipped, a table
//! (segment) of each of its keyspaces bit-flipped or cut short. After each, the node is
//! started again and must end in one of these, never serving a block whose hash chain does not
//! verify, never panicking:
//!
//! | outcome           | what is checked                                                           |
//! |-------------------|---------------------------------------------------------------------------|
//! | `refused`         | exits 1 within the deadline; its `error:` line names its storage and the damage |
//! | `recovered`       | converges with the others (same chain; a peer: same state hash); serves the whole verified chain |
//! | `stopped later`   | (peer) runs until a read meets the damage, then stops like `refused`       |
//! | `serves a prefix` | (peer) converges, serves verified blocks, and answers an error naming the damage for the blocks it cannot read |
//!
//! Each case starts from a copy of the same stopped data directory, whose keyspaces were
//! first flushed into tables (offline, with fjall) so there are tables to damage.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;

use super::load::Load;
use super::load::MintLoad;
use super::net::tail;
use super::net::Net;
use super::three_orderers;
use super::two_peers;
use super::FREQUENT_SNAPSHOTS;

/// One way to damage a stopped node's database (`DATA_DIR/ledger`).
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The journal's written bytes cut to two thirds (a torn tail, and more).
    JournalTruncated,
    /// One byte of the journal's written part flipped at this fraction of it.
    JournalFlipped(f64),
    /// One byte flipped in the middle of the newest table of the keyspace `PREFIX.CHANNEL`.
    TableFlipped(&'static str),
    /// The newest table of the keyspace cut to half its length.
    TableTruncated(&'static str),
}

const ORDERER_DAMAGE: &[Damage] = &[
    Damage::JournalTruncated,
    Damage::JournalFlipped(0.5),
    Damage::JournalFlipped(0.999),
    Damage::TableFlipped("blocks"),
    Damage::TableFlipped("txids"),
    Damage::TableFlipped("sm"),
    Damage::TableFlipped("rlog"),
    Damage::TableFlipped("rmeta"),
    Damage::TableTruncated("blocks"),
];

const PEER_DAMAGE: &[Damage] = &[
    Damage::JournalTruncated,
    Damage::JournalFlipped(0.5),
    Damage::JournalFlipped(0.999),
    Damage::TableFlipped("blocks"),
    Damage::TableFlipped("state"),
    Damage::TableFlipped("txids"),
    Damage::TableFlipped("meta"),
    Damage::TableTruncated("blocks"),
];

fn db_dir(data: &Path) -> PathBuf {
    data.join("ledger")
}

fn journal(data: &Path) -> anyhow::Result<PathBuf> {
    for e in std::fs::read_dir(db_dir(data))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "jnl") {
            return Ok(p);
        }
    }
    anyhow::bail!("no journal in {}", db_dir(data).display())
}

/// The journal is preallocated with zeros: its written part ends at the last nonzero byte.
fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn flip_byte(path: &Path, at: usize) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    anyhow::ensure!(
        at < bytes.len(),
        "{} has {} bytes",
        path.display(),
        bytes.len()
    );
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Flushes every keyspace of the stopped node's database into tables (as fjall would once
/// its memtables filled) and returns keyspace name -> its tables directory.
fn flush_all(data: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let db = fjall::Database::builder(db_dir(data)).open()?;
    let mut dirs = Vec::new();
    for name in db.list_keyspace_names() {
        let ks = db.keyspace(&name, fjall::KeyspaceCreateOptions::default)?;
        ks.rotate_memtable_and_wait()?;
        dirs.push((name.to_string(), ks.path().join("tables")));
    }
    db.persist(fjall::PersistMode::SyncAll)?;
    Ok(dirs)
}

fn newest_table(dirs: &[(String, PathBuf)], keyspace: &str) -> anyhow::Result<PathBuf> {
    let name = format!("{keyspace}.{}", chaos_tests::topology::CHANNEL);
    let dir = &dirs
        .iter()
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no keyspace {name}"))?
        .1;
    let mut tables: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    tables.sort();
    tables
        .pop()
        .map(|t| t.1)
        .with_context(|| format!("{name} has no table"))
}

fn damage(data: &Path, dirs: &[(String, PathBuf)], d: Damage) -> anyhow::Result<PathBuf> {
    match d {
        Damage::JournalTruncated => {
            let j = journal(data)?;
            let written = written_len(&std::fs::read(&j)?);
            let file = std::fs::OpenOptions::new().write(true).open(&j)?;
            file.set_len(written as u64 * 2 / 3)?;
            Ok(j)
        }
        Damage::JournalFlipped(at) => {
            let j = journal(data)?;
            let written = written_len(&std::fs::read(&j)?);
            flip_byte(
                &j,
                ((written as f64 * at) as usize).min(written.saturating_sub(1)),
            )?;
            Ok(j)
        }
        Damage::TableFlipped(ks) => {
            let t = newest_table(dirs, ks)?;
            flip_byte(&t, std::fs::metadata(&t)?.len() as usize / 2)?;
            Ok(t)
        }
        Damage::TableTruncated(ks) => {
            let t = newest_table(dirs, ks)?;
            let len = std::fs::metadata(&t)?.len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&t)?
                .set_len(len / 2)?;
            Ok(t)
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Puts back the pristine copy of the node's data dir.
fn restore(pristine: &Path, data: &Path) -> anyhow::Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data)?;
    }
    copy_dir(pristine, data)
}

/// Waits up to `within` for node `i` to exit; `Some(its last error line)` if it did (checked
/// to be a clean refusal naming its storage), `None` if it still runs.
async fn refused(net: &mut Net, i: usize, within: Duration) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = net.proc(i).exited() {
            let log = net.log_text(i);
            anyhow::ensure!(!log.contains("panicked"), "panicked:\n{}", tail(&log, 30));
            anyhow::ensure!(
                status.code() == Some(1),
                "exited with {status}:\n{}",
                tail(&log, 30)
            );
            let line = log
                .lines()
                .rev()
                .find(|l| l.starts_with("error: "))
                .unwrap_or_default()
                .to_owned();
            let names_storage = ["storage", "raft for channel", "ledger"]
                .iter()
                .any(|w| line.contains(w));
            let names_damage = [
                "Checksum",
                "JournalRecovery",
                "Unrecoverable",
                "corrupt",
                "Io(",
                "Invalid",
            ]
            .iter()
            .any(|w| line.contains(w));
            anyhow::ensure!(names_storage && names_damage, "unclear refusal: {line:?}");
            return Ok(Some(line));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Stops node `i` if it runs (between cases).
async fn stop(net: &mut Net, i: usize) -> anyhow::Result<()> {
    if net.procs[i].is_some() {
        net.proc(i).stop().await?;
    }
    Ok(())
}

/// Three orderers; a follower stopped after load, then each damage of [`ORDERER_DAMAGE`] on a
/// fresh copy of its data dir, and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_with_damaged_files_refuses_to_start_or_recovers_and_never_serves_a_bad_block(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let mut net = three_orderers("cpdisk", None, FREQUENT_SNAPSHOTS).await?;
    let orderers = net.orderers();
    let victim = orderers[2];
    let load = Load::start(&net, 4, 2000);
    load.wait_more(300, Duration::from_secs(60)).await?;
    load.stop().await;
    let (height, _) = net.converged(&orderers, 2).await?;
    net.proc(victim).stop().await?;
    let data = net.data_dir(victim);
    let dirs = flush_all(&data)?;
    let pristine = data.with_file_name("pristine-data");
    copy_dir(&data, &pristine)?;
    for &d in ORDERER_DAMAGE {
        restore(&pristine, &data)?;
        let file = damage(&data, &dirs, d)?;
        net.start(victim, None)?;
        let outcome = match refused(&mut net, victim, Duration::from_secs(20))
            .await
            .with_context(|| format!("{d:?}"))?
        {
            Some(line) => {
                println!("{}", tail(&net.log_text(victim), 4));
                format!("refused: {line}")
            }
            None => {
                let (h, _) = net
                    .converged(&orderers, height)
                    .await
                    .context(format!("{d:?}"))?;
                // Deliver from the damaged node: every block it serves must verify and be
                // the others' block.
                let theirs = net.verify_chain(&net.deliver(orderers[0], h).await?)?;
                let blocks = net.deliver(victim, h).await.context(format!("{d:?}"))?;
                let mine = net.verify_chain(&blocks).context(format!("{d:?}"))?;
                anyhow::ensure!(mine == theirs, "{d:?}: the damaged node's chain differs");
                format!("recovered: serves the verified chain of {h} blocks")
            }
        };
        println!("{d:?} of {}: {outcome}", file.display());
        stop(&mut net, victim).await?;
    }
    // Undamaged, it serves again (the cases left the cluster intact).
    restore(&pristine, &data)?;
    net.start(victim, None)?;
    net.wait_ready(&orderers, Duration::from_secs(60)).await?;
    net.converged(&orderers, height).await?;
    Ok(())
}

/// Reads peer `i`'s blocks `0..height` by its Query service: every block it serves must verify
/// as the chain; returns how many it served before the first it would not (which must fail
/// with an error, not a bad block).
async fn served_prefix(net: &Net, i: usize, height: u64) -> anyhow::Result<(u64, Option<String>)> {
    let gw = net.gateway_at(i);
    let mut blocks = Vec::new();
    let mut refusal = None;
    for n in 0..height {
        match gw.block_by_number(n).await {
            Ok(b) => blocks.push(b),
            Err(e) => {
                refusal = Some(format!("block {n}: {e}"));
                break;
            }
        }
    }
    if !blocks.is_empty() {
        net.verify_chain(&blocks)?;
    }
    Ok((blocks.len() as u64, refusal))
}

/// One orderer, two peers; the second peer stopped after load, then each damage of
/// [`PEER_DAMAGE`] on a fresh copy of its data dir, a restart and a little more load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_damaged_files_never_serves_a_bad_block_and_names_what_it_cannot_read(
) -> anyhow::Result<()> {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let (mut net, twin, victim) = two_peers("cppdisk", None).await?;
    let load = MintLoad::start(&net, 4);
    load.wait_more(100, Duration::from_secs(60)).await?;
    load.stop().await;
    net.peers_converged(twin, victim).await?;
    net.proc(victim).stop().await?;
    let data = net.data_dir(victim);
    let dirs = flush_all(&data)?;
    let pristine = data.with_file_name("pristine-data");
    copy_dir(&data, &pristine)?;
    for &d in PEER_DAMAGE {
        restore(&pristine, &data)?;
        let file = damage(&data, &dirs, d)?;
        net.start(victim, None)?;
        let outcome = match refused(&mut net, victim, Duration::from_secs(10))
            .await
            .with_context(|| format!("{d:?}"))?
        {
            Some(line) => format!("refused: {line}"),
            None => {
                // New blocks make it validate against (and write over) what it holds.
                let load = MintLoad::start(&net, 2);
                let more = load.wait_more(10, Duration::from_secs(30)).await;
                load.stop().await;
                more?;
                match refused(&mut net, victim, Duration::from_secs(2)).await? {
                    Some(line) => format!("stopped later: {line}"),
                    None => {
                        let (h, _, _) = net
                            .peers_converged(twin, victim)
                            .await
                            .context(format!("{d:?}"))?;
                        let (served, refusal) = served_prefix(&net, victim, h)
                            .await
                            .context(format!("{d:?}"))?;
                        match refusal {
                            None => format!("recovered: serves the verified chain of {h} blocks"),
                            Some(why) => {
                                anyhow::ensure!(
                                    why.contains("Checksum") || why.contains("corrupt"),
                                    "{d:?}: block refused without naming the damage: {why}"
                                );
                                format!("serves a prefix: {served} of {h} verified; {why}")
                            }
                        }
                    }
                }
            }
        };
        println!("{d:?} of {}: {outcome}", file.display());
        stop(&mut net, victim).await?;
    }
    restore(&pristine, &data)?;
    net.start(victim, None)?;
    net.peers_converged(twin, victim).await?;
    Ok(())
}
