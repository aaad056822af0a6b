//! CPU time and storage writes of this process, of its threads and of other processes (node
//! processes the bench started), from `/proc` (Linux). Used to show whether a run was
//! CPU-bound, which part spent the CPU, and how much each node wrote to storage.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`; 100 on every mainstream Linux).
const TICKS_PER_S: f64 = 100.0;

/// (utime + stime) in seconds from one `stat` line, or `None` if it does not parse.
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // Fields after the command: state is field 3, utime 14, stime 15 (1-based).
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_S))
}

/// `/proc/<pid>`, or `/proc/self` for `None`.
fn proc_dir(pid: Option<u32>) -> std::path::PathBuf {
    match pid {
        Some(pid) => std::path::PathBuf::from(format!("/proc/{pid}")),
        None => std::path::PathBuf::from("/proc/self"),
    }
}

/// CPU seconds the whole process has used so far (0 if `/proc` is unavailable).
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of(None)
}

/// CPU seconds process `pid` (`None`: this one) has used so far, all its threads; 0 if its
/// `/proc` entry is unavailable (e.g. it exited).
pub fn cpu_seconds_of(pid: Option<u32>) -> f64 {
    std::fs::read_to_string(proc_dir(pid).join("stat"))
        .ok()
        .and_then(|s| stat_cpu(&s))
        .map_or(0.0, |(_, cpu)| cpu)
}

/// Bytes this process has caused to be written to storage so far (`write_bytes` in
/// `/proc/self/io`: what reached the block layer, not socket writes); 0 if unavailable.
pub fn storage_write_bytes() -> u64 {
    storage_write_bytes_of(None)
}

/// [`storage_write_bytes`] of process `pid` (`None`: this one); readable for processes of the
/// same user, so for the node processes the bench started.
pub fn storage_write_bytes_of(pid: Option<u32>) -> u64 {
    std::fs::read_to_string(proc_dir(pid).join("io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds used so far by live threads, summed per thread name with trailing digits and
/// dashes removed (so `orderer1` stays `orderer1` but `tokio-runtime-worker` and
/// `rayon-7` group), empty if `/proc` is unavailable.
pub fn cpu_by_thread_name() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((comm, cpu)) = stat_cpu(&stat) {
            *out.entry(group_name(&comm)).or_insert(0.0) += cpu;
        }
    }
    out
}

/// `orderer1` → `orderer1`; `rayon-7`, `rayon 7` → `rayon`; names are truncated to 15 bytes
/// by the kernel, so only a trailing `-<digits>` or ` <digits>` is dropped.
fn group_name(comm: &str) -> String {
    let trimmed = comm.trim_end_matches(|c: char| c.is_ascii_digit());
    match trimmed.strip_suffix(['-', ' ', '_']) {
        Some(base) if trimmed.len() < comm.len() => base.to_owned(),
        _ => comm.to_owned(),
    }
}

/// Per-name CPU seconds spent between two [`cpu_by_thread_name`] snapshots (names with less
/// than 10 ms dropped), largest first.
pub fn cpu_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(name, cpu)| (name.clone(), cpu - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d >= 0.01)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_groups_names() {
        let line = "1234 (rayon 3) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let (comm, cpu) = stat_cpu(line).unwrap_or_default();
        assert_eq!(comm, "rayon 3");
        assert!((cpu - 3.0).abs() < 1e-9);
        assert_eq!(group_name("rayon-12"), "rayon");
        assert_eq!(group_name("orderer1"), "orderer1");
        assert_eq!(group_name("bench-client"), "bench-client");
    }
}
