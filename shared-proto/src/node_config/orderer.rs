//! The orderer's config file: listeners, Raft timing.

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use super::address::validate_overrides;
use super::address::AddressOverride;
use super::common_files;
use super::invalid;
use super::load_node_config;
use super::log_settings;
use super::non_empty;
use super::socket_addr;
use super::ChannelBootstrap;
use super::ConfigError;
use super::KeyPairFiles;
use super::LogSettings;
use super::NodeFiles;
use super::TlsFiles;

/// Raft timing and log compaction. Defaults suit a LAN or one box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a state-machine snapshot (and purge the log below it) every this many entries.
    pub snapshot_interval_entries: u64,
    /// Entries kept after a snapshot for followers that are only a little behind.
    pub entries_kept_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_interval_entries: 5000,
            entries_kept_after_snapshot: 500,
        }
    }
}

/// One orderer node (`orderer start --config orderer.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdererConfig {
    /// Name of the network this node was generated for; tools refuse to mix networks.
    pub network: String,
    /// Raft node id; must match this node's consenter entry in each channel config.
    pub node_id: u64,
    pub msp_id: String,
    /// Broadcast, Deliver and Admin (TLS; client certificates optional).
    pub listen_address: String,
    /// Orderer-to-orderer traffic (mutual TLS; pinned consenters only).
    pub cluster_listen_address: String,
    /// HTTP `/healthz`, `/readyz`, `/metrics`.
    pub ops_listen_address: String,
    pub data_dir: PathBuf,
    /// Signing identity: signs blocks.
    pub identity: KeyPairFiles,
    pub tls: TlsFiles,
    pub channels: Vec<ChannelBootstrap>,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub log: LogSettings,
    /// Addresses to dial instead of the ones the channel config advertises (consenter
    /// host:port, `orderer_endpoints`): a proxy per link, an in-cluster name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_overrides: Vec<AddressOverride>,
    /// `/readyz` fails when any channel is not ready; by default only when none is, so one
    /// channel without a leader does not take a node serving others out of service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready_requires_every_channel: bool,
}

impl NodeFiles for OrdererConfig {
    fn files(
        &mut self,
    ) -> (
        &mut PathBuf,
        &mut KeyPairFiles,
        &mut TlsFiles,
        &mut Vec<ChannelBootstrap>,
    ) {
        (
            &mut self.data_dir,
            &mut self.identity,
            &mut self.tls,
            &mut self.channels,
        )
    }
}

impl OrdererConfig {
    pub const ENV_PREFIX: &'static str = "WEFT_ORDERER_";

    /// Reads the file, applies `WEFT_ORDERER_*` overrides, resolves paths. Call
    /// [`OrdererConfig::validate`] next.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_node_config(path, Self::ENV_PREFIX)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("network", &self.network)?;
        non_empty("msp_id", &self.msp_id)?;
        if self.node_id == 0 {
            return Err(invalid(
                "node_id",
                "must be at least 1 (0 means no node in Raft)",
            ));
        }
        socket_addr("listen_address", &self.listen_address)?;
        socket_addr("cluster_listen_address", &self.cluster_listen_address)?;
        socket_addr("ops_listen_address", &self.ops_listen_address)?;
        common_files(&self.identity, &self.tls, &self.channels)?;
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 {
            return Err(invalid("raft.heartbeat_interval_ms", "must be positive"));
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                format!(
                    "({}) must exceed raft.heartbeat_interval_ms ({})",
                    r.election_timeout_min_ms, r.heartbeat_interval_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!(
                    "({}) must exceed raft.election_timeout_min_ms ({})",
                    r.election_timeout_max_ms, r.election_timeout_min_ms
                ),
            ));
        }
        if r.snapshot_interval_entries == 0 {
            return Err(invalid(
                "raft.snapshot_interval_entries",
                "must be positive",
            ));
        }
        validate_overrides(&self.address_overrides)?;
        log_settings(&self.log)
    }
}
