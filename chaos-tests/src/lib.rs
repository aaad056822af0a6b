//! Dev network, chaos harness and benchmarks.
//!
//! - `devnet` binary: generates a network's material ([`topology`]), runs every node as a
//!   process ([`launcher`], [`node_main`]), drives a token-transfer workload through the SDK
//!   ([`workload`]) and reports what happened; its operator verbs (`add-orderer`, `add-peer`,
//!   `add-org`, `create-channel`) change the network while it runs ([`devnet`]).
//! - `bench` binary: benchmarks with the box's raw limits measured in the same run
//!   (`validation`, `ordering`, `e2e` on the dev network's topology) and `bench plot`.
//!
//! - `chaos` binary: real clusters under faults ([`harness`], [`net`], [`scenario`], [`run`]),
//!   every transaction in a [`history`], the invariants checked at the end ([`check`]), reports
//!   and plots ([`report`]), and `chaos mutants` showing the checks catch planted bugs
//!   ([`mutants`]); see docs/chaos.md.

pub mod bench;
pub mod check;
pub mod devnet;
pub mod harness;
pub mod history;
pub mod launcher;
pub mod mutants;
pub mod net;
pub mod node_main;
pub mod report;
pub mod run;
pub mod scenario;
pub mod topology;
pub mod workload;
