//! The chaos harness's integration tests, one binary (one linked copy of the nodes instead of one
//! per file: CI's disk is finite). Run one module with `cargo test -p chaos-tests --test suite MODULE::`.
//! `crash_points` is compiled only with `--features failpoints` (its node processes, this crate's
//! `devnet` binary, must carry the failpoints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "failpoints")]
mod crash_points;
mod devnet_verbs;
mod disk_full;
mod net_faults;
mod peer_kill;
mod shutdown;

/// Each test runs a whole network of processes; on a 2-core box two at once starve each
/// other's deadlines, so they take turns.
pub static ONE_NETWORK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
