//! The orderer's integration tests, one binary (each file was its own binary, and twenty
//! copies of the linked node filled CI's disk). Each module is one entry of the fault
//! catalogue; run one with `cargo test -p orderer --test suite MODULE::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod address_overrides;
mod admin_cli;
mod authorization;
mod bad_input;
mod block_store_height;
mod catchup_expired_certs;
mod catchup_history;
mod certificate_rotation;
mod channel_participation;
mod cluster;
mod common;
mod config_updates;
mod deliver_checks;
mod forwarded;
mod grpcio_client;
mod memory_bound;
mod metrics;
mod pending_writes;
mod process;
mod process_kill;
mod readiness;
mod snapshot_install_crash;
mod storage_suite;
mod wiped_data_dir;
mod wiped_vote;
