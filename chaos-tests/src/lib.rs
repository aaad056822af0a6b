//! Chaos harness, dev network and benchmarks (the cluster launcher, fault injection, workload
//! and invariant checkers arrive with their issues).
//!
//! Today: the `devnet` binary's `generate` command, which writes a network's material from a
//! spec file (see `shared_proto::material`).
