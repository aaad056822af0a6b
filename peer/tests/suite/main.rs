//! The peer's integration tests, one binary (one linked copy of the nodes instead of one
//! per file: CI's disk is finite). Run one module with `cargo test -p peer --test suite MODULE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod address_overrides;
mod channel_join;
mod channel_join_refusals;
mod common;
mod deliver_endpoints;
mod e2e;
mod gossip;
mod live_config;
mod new_org;
mod orderer_endpoints;
mod query;
