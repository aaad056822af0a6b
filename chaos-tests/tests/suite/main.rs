//! The chaos harness's integration tests, one binary (one linked copy of the nodes instead of one
//! per file: CI's disk is finite). Run one module with `cargo test -p chaos-tests --test suite MODULE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_kill;
mod shutdown;
