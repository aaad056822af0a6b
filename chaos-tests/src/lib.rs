//! Dev network, chaos harness and benchmarks.
//!
//! - `devnet` binary: generates a network's material, runs every node as a process, drives a
//!   token-transfer workload through the SDK and reports what happened ([`launcher`]).
//! - `bench` binary: benchmarks with the box's raw limits measured in the same run.
//!
//! The fault-injection harness (kill, pause, partition under load, invariant checkers) comes
//! with the chaos issue.

pub mod bench;
pub mod launcher;
