//! Clock skew for one node process with libfaketime (Debian's `libfaketime` package:
//! `apt-get install -y faketime`), preloaded into the node when it starts.
//!
//! What libfaketime 0.9.10 does to a Rust node, measured on this box (docs/chaos.md):
//!
//! - `CLOCK_REALTIME` (`SystemTime`: TLS certificate checks, envelope and request timestamps,
//!   log lines) gets the offset and, with `xRATE`, runs at that rate from the process start.
//! - `CLOCK_MONOTONIC` (`Instant`: tokio timers, Raft heartbeats and elections) is faked too
//!   unless `FAKETIME_DONT_FAKE_MONOTONIC=1`, and then reads as the faked *wall* clock. Rust's
//!   std hands that value to the kernel as an absolute futex deadline (`recv_timeout`,
//!   `park_timeout`, `Condvar::wait_timeout`), so every such wait hangs for decades: a harness
//!   artifact, not a clock a machine can have. The harness therefore always sets
//!   `FAKETIME_DONT_FAKE_MONOTONIC=1`: `Instant` stays real, as a real clock step or a drifting
//!   wall clock leaves it.
//! - Relative sleeps (`nanosleep`, `epoll_wait`'s timeout) are divided by the rate; tokio
//!   re-arms from `Instant`, so its timers still fire on real time.
//!
//! The node is started with the skew (the environment is read at start), so the node of a
//! skew fault restarts into it and restarts again without it when the fault heals.

use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// Overrides where the library is looked for.
pub const LIBFAKETIME_ENV: &str = "CHAOS_LIBFAKETIME";
/// The thread-safe build of the library (the nodes are multi-threaded).
const LIB_NAME: &str = "libfaketimeMT.so.1";
/// Where distributions install it.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime",
    "/usr/lib/aarch64-linux-gnu/faketime",
    "/usr/lib/faketime",
    "/usr/lib64/faketime",
    "/usr/local/lib/faketime",
];
/// The variables a skew sets besides `LD_PRELOAD`.
const VARS: &[&str] = &["FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"];

/// The library's path, or why there is none (the message names the package to install).
pub fn libfaketime() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(LIBFAKETIME_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{LIBFAKETIME_ENV}={} is not a file", p.display()))
        };
    }
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(LIB_NAME))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "libfaketime not found ({LIB_NAME} in none of {}); install it with \
                 `apt-get update && apt-get install -y faketime` or set {LIBFAKETIME_ENV}",
                LIB_DIRS.join(", ")
            )
        })
}

/// A wall-clock skew: an offset from the real clock and the rate it runs at from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    pub offset_s: i32,
    /// The clock's rate in thousandths (1000 = real rate, 1100 = 10% fast).
    pub rate_permille: u32,
}

impl Skew {
    /// libfaketime's `FAKETIME` value: `+40 x1.100`.
    pub fn faketime(&self) -> String {
        format!(
            "{:+} x{}.{:03}",
            self.offset_s,
            self.rate_permille / 1000,
            self.rate_permille % 1000
        )
    }

    /// The environment that starts a node with this skew, given the node's own `LD_PRELOAD`.
    pub fn env(&self, lib: &Path, preload: Option<&str>) -> Vec<(String, String)> {
        let lib = lib.display().to_string();
        let preload = match preload {
            Some(p) if !p.is_empty() => format!("{lib}:{p}"),
            _ => lib,
        };
        vec![
            ("LD_PRELOAD".into(), preload),
            ("FAKETIME".into(), self.faketime()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

/// `LD_PRELOAD` without libfaketime, and the other variables a skew set (to remove).
pub fn unskewed_preload(preload: &str) -> Option<String> {
    let rest: Vec<&str> = preload
        .split(':')
        .filter(|p| !p.is_empty() && !p.ends_with(LIB_NAME))
        .collect();
    (!rest.is_empty()).then(|| rest.join(":"))
}

/// The variables a skew sets besides `LD_PRELOAD`.
pub fn skew_vars() -> &'static [&'static str] {
    VARS
}

/// How far the clock that stamped the last line of `log` is from this process's clock, in
/// seconds (positive: ahead), read from the line's RFC 3339 timestamp
/// (`2026-11-28T17:21:06.167662Z`); `None` when no line has one.
pub fn log_clock_offset_s(log: &str) -> Option<f64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let stamped = log
        .lines()
        .rev()
        .find_map(|l| parse_rfc3339(l.get(..27)?))?;
    Some(stamped - now.as_secs_f64())
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm) = (num(11..13)?, num(14..16)?);
    let secs: f64 = s.get(17..s.len() - 1)?.parse().ok()?;
    Some((days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60) as f64 + secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn faketime_values_carry_the_sign_and_the_rate() {
        let fast = Skew {
            offset_s: 40,
            rate_permille: 1100,
        };
        let slow = Skew {
            offset_s: -45,
            rate_permille: 900,
        };
        assert_eq!(fast.faketime(), "+40 x1.100");
        assert_eq!(slow.faketime(), "-45 x0.900");
    }

    #[test]
    fn preload_is_composed_and_restored() {
        let s = Skew {
            offset_s: 1,
            rate_permille: 1000,
        };
        let lib = Path::new("/l/libfaketimeMT.so.1");
        let env = s.env(lib, Some("/x/other.so"));
        assert_eq!(env[0].1, "/l/libfaketimeMT.so.1:/x/other.so");
        assert_eq!(unskewed_preload(&env[0].1).as_deref(), Some("/x/other.so"));
        assert_eq!(unskewed_preload("/l/libfaketimeMT.so.1"), None);
    }

    #[test]
    fn log_timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000000Z"), Some(0.0));
        let t = parse_rfc3339("2026-11-28T17:21:06.500000Z").unwrap();
        assert!((t - 1_795_886_466.5).abs() < 1e-6, "{t}");
        assert_eq!(parse_rfc3339("not a time at all, really no"), None);
    }
}
