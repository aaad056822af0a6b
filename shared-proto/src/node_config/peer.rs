//! The peer's config file: listeners, gossip, external chaincodes.

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

/// Gossip settings of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSettings {
    /// Other peers of the same org to contact at start (host:port of their gossip listener).
    pub bootstrap: Vec<String>,
    /// Whether this peer may connect to the orderers (be elected to pull blocks).
    pub orderer_connected: bool,
    /// The address other peers use to reach this peer's gossip listener.
    pub external_endpoint: String,
    /// `None` (default): leader elected among the org's orderer-connected peers (highest
    /// height wins). `Some(true)`: always pull from the orderers; `Some(false)`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_leader: Option<bool>,
    /// Peers a committed block is pushed to.
    #[serde(default = "gossip_defaults::fanout")]
    pub fanout: usize,
    /// Alive messages are sent this often.
    #[serde(default = "gossip_defaults::heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A member not heard from for this long is dropped (re-added when it speaks again).
    #[serde(default = "gossip_defaults::alive_expiry_ms")]
    pub alive_expiry_ms: u64,
    /// Heights are compared and missing blocks pulled at least this often.
    #[serde(default = "gossip_defaults::pull_interval_ms")]
    pub pull_interval_ms: u64,
    /// Blocks asked for in one pull request.
    #[serde(default = "gossip_defaults::pull_batch_blocks")]
    pub pull_batch_blocks: u64,
    /// A leader this many blocks behind another orderer-connected peer hands over.
    #[serde(default = "gossip_defaults::election_lag_blocks")]
    pub election_lag_blocks: u64,
}

/// Defaults of the gossip tunables.
pub mod gossip_defaults {
    pub fn fanout() -> usize {
        3
    }
    pub fn heartbeat_ms() -> u64 {
        1000
    }
    pub fn alive_expiry_ms() -> u64 {
        5000
    }
    pub fn pull_interval_ms() -> u64 {
        1000
    }
    pub fn pull_batch_blocks() -> u64 {
        32
    }
    pub fn election_lag_blocks() -> u64 {
        10
    }
}

impl Default for GossipSettings {
    fn default() -> Self {
        GossipSettings {
            bootstrap: Vec::new(),
            orderer_connected: true,
            external_endpoint: String::new(),
            static_leader: None,
            fanout: gossip_defaults::fanout(),
            heartbeat_ms: gossip_defaults::heartbeat_ms(),
            alive_expiry_ms: gossip_defaults::alive_expiry_ms(),
            pull_interval_ms: gossip_defaults::pull_interval_ms(),
            pull_batch_blocks: gossip_defaults::pull_batch_blocks(),
            election_lag_blocks: gossip_defaults::election_lag_blocks(),
        }
    }
}

impl GossipSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        non_empty("gossip.external_endpoint", &self.external_endpoint)?;
        for (i, b) in self.bootstrap.iter().enumerate() {
            if !b.contains(':') {
                return Err(invalid(
                    &format!("gossip.bootstrap[{i}]"),
                    format!("{b:?} is not host:port"),
                ));
            }
        }
        if self.static_leader == Some(true) && !self.orderer_connected {
            return Err(invalid(
                "gossip.static_leader",
                "true needs gossip.orderer_connected = true".to_owned(),
            ));
        }
        if !(1..=16).contains(&self.fanout) {
            return Err(invalid(
                "gossip.fanout",
                format!("{} is not within 1..=16", self.fanout),
            ));
        }
        if self.heartbeat_ms < 50 {
            return Err(invalid(
                "gossip.heartbeat_ms",
                format!("{} is below 50", self.heartbeat_ms),
            ));
        }
        if self.alive_expiry_ms < 2 * self.heartbeat_ms {
            return Err(invalid(
                "gossip.alive_expiry_ms",
                format!(
                    "{} is below twice gossip.heartbeat_ms ({})",
                    self.alive_expiry_ms, self.heartbeat_ms
                ),
            ));
        }
        if self.pull_interval_ms < 10 {
            return Err(invalid(
                "gossip.pull_interval_ms",
                format!("{} is below 10", self.pull_interval_ms),
            ));
        }
        if !(1..=512).contains(&self.pull_batch_blocks) {
            return Err(invalid(
                "gossip.pull_batch_blocks",
                format!("{} is not within 1..=512", self.pull_batch_blocks),
            ));
        }
        Ok(())
    }
}

/// One peer node (`peer start --config peer.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub network: String,
    pub name: String,
    pub msp_id: String,
    /// Endorser, Deliver (events) and Query services (TLS).
    pub listen_address: String,
    /// Peer-to-peer gossip (mutual TLS).
    pub gossip_listen_address: String,
    pub ops_listen_address: String,
    pub data_dir: PathBuf,
    /// Signing identity: signs endorsements.
    pub identity: KeyPairFiles,
    pub tls: TlsFiles,
    pub channels: Vec<ChannelBootstrap>,
    pub gossip: GossipSettings,
    /// Chaincodes run as external services (any language), besides the built-in samples.
    #[serde(default)]
    pub external_chaincodes: Vec<ExternalChaincode>,
    #[serde(default)]
    pub log: LogSettings,
    /// Addresses to dial instead of the advertised ones: orderer endpoints from the channel
    /// config, gossip endpoints (bootstrap and those members announce).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_overrides: Vec<AddressOverride>,
}

/// A chaincode served over gRPC ("chaincode as a service").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalChaincode {
    pub name: String,
    pub version: String,
    /// host:port of the chaincode server.
    pub address: String,
}

impl NodeFiles for PeerConfig {
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

impl PeerConfig {
    pub const ENV_PREFIX: &'static str = "WEFT_PEER_";

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_node_config(path, Self::ENV_PREFIX)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty("network", &self.network)?;
        non_empty("name", &self.name)?;
        non_empty("msp_id", &self.msp_id)?;
        socket_addr("listen_address", &self.listen_address)?;
        socket_addr("gossip_listen_address", &self.gossip_listen_address)?;
        socket_addr("ops_listen_address", &self.ops_listen_address)?;
        common_files(&self.identity, &self.tls, &self.channels)?;
        self.gossip.validate()?;
        for (i, cc) in self.external_chaincodes.iter().enumerate() {
            non_empty(&format!("external_chaincodes[{i}].name"), &cc.name)?;
            non_empty(&format!("external_chaincodes[{i}].version"), &cc.version)?;
            if !cc.address.contains(':') {
                return Err(invalid(
                    &format!("external_chaincodes[{i}].address"),
                    format!("{:?} is not host:port", cc.address),
                ));
            }
        }
        validate_overrides(&self.address_overrides)?;
        log_settings(&self.log)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn gossip_settings_errors_name_the_field() {
        let ok = GossipSettings {
            external_endpoint: "peer0:7051".into(),
            ..GossipSettings::default()
        };
        assert!(ok.validate().is_ok());
        let cases: Vec<(&str, GossipSettings)> = vec![
            (
                "gossip.external_endpoint",
                GossipSettings {
                    external_endpoint: String::new(),
                    ..ok.clone()
                },
            ),
            (
                "gossip.bootstrap[1]",
                GossipSettings {
                    bootstrap: vec!["a:1".into(), "nope".into()],
                    ..ok.clone()
                },
            ),
            (
                "gossip.static_leader",
                GossipSettings {
                    static_leader: Some(true),
                    orderer_connected: false,
                    ..ok.clone()
                },
            ),
            (
                "gossip.fanout",
                GossipSettings {
                    fanout: 0,
                    ..ok.clone()
                },
            ),
            (
                "gossip.heartbeat_ms",
                GossipSettings {
                    heartbeat_ms: 10,
                    ..ok.clone()
                },
            ),
            (
                "gossip.alive_expiry_ms",
                GossipSettings {
                    alive_expiry_ms: 1500,
                    ..ok.clone()
                },
            ),
            (
                "gossip.pull_interval_ms",
                GossipSettings {
                    pull_interval_ms: 1,
                    ..ok.clone()
                },
            ),
            (
                "gossip.pull_batch_blocks",
                GossipSettings {
                    pull_batch_blocks: 0,
                    ..ok.clone()
                },
            ),
        ];
        for (field, settings) in cases {
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn gossip_tunables_default_when_absent_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bootstrap = []\norderer_connected = false\nexternal_endpoint = \"p:1\"\nfanout = 5\n",
        );
        let g: GossipSettings = super::super::load_toml(&p, "X_", std::iter::empty()).unwrap();
        assert_eq!(g.fanout, 5);
        assert_eq!(g.heartbeat_ms, gossip_defaults::heartbeat_ms());
        assert_eq!(g.static_leader, None);
    }
}
