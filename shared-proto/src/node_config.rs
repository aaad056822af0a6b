//! Node configuration files: the contract between the material generator, deployments and the
//! `orderer` / `peer` binaries.
//!
//! One TOML file per node, then environment overrides: `WEFT_ORDERER_RAFT__HEARTBEAT_INTERVAL_MS=80`
//! sets `raft.heartbeat_interval_ms` (prefix, then the field path with `__` between levels; the
//! value is read as TOML, else as a string). Relative paths are resolved against the config
//! file's directory. [`OrdererConfig::validate`] / [`PeerConfig::validate`] run once at start and
//! name the offending field.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS material: this node's certificate and key, and the CAs whose certificates it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBootstrap {
    /// The channel's genesis (config) block.
    pub genesis_block: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing env-filter directive, e.g. `info` or `orderer=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

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
}

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

impl OrdererConfig {
    pub const ENV_PREFIX: &'static str = "WEFT_ORDERER_";

    /// Reads the file, applies `WEFT_ORDERER_*` overrides, resolves paths. Call
    /// [`OrdererConfig::validate`] next.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = load_toml(path, Self::ENV_PREFIX, std::env::vars())?;
        let c = &mut cfg;
        resolve_paths(
            path,
            &mut c.data_dir,
            &mut c.identity,
            &mut c.tls,
            &mut c.channels,
        );
        Ok(cfg)
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
        log_settings(&self.log)
    }
}

impl PeerConfig {
    pub const ENV_PREFIX: &'static str = "WEFT_PEER_";

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = load_toml(path, Self::ENV_PREFIX, std::env::vars())?;
        let c = &mut cfg;
        resolve_paths(
            path,
            &mut c.data_dir,
            &mut c.identity,
            &mut c.tls,
            &mut c.channels,
        );
        Ok(cfg)
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
        log_settings(&self.log)
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Makes the node's file paths relative to the config file's directory.
fn resolve_paths(
    config_path: &Path,
    data_dir: &mut PathBuf,
    identity: &mut KeyPairFiles,
    tls: &mut TlsFiles,
    channels: &mut [ChannelBootstrap],
) {
    let base = base_dir(config_path);
    *data_dir = base.join(&*data_dir);
    resolve_key_pair(&base, identity);
    resolve_tls(&base, tls);
    resolve_channels(&base, channels);
}

fn resolve_key_pair(base: &Path, k: &mut KeyPairFiles) {
    k.cert = base.join(&k.cert);
    k.key = base.join(&k.key);
}

fn resolve_tls(base: &Path, t: &mut TlsFiles) {
    t.cert = base.join(&t.cert);
    t.key = base.join(&t.key);
    for ca in &mut t.ca_roots {
        *ca = base.join(&*ca);
    }
}

fn resolve_channels(base: &Path, channels: &mut [ChannelBootstrap]) {
    for c in channels {
        c.genesis_block = base.join(&c.genesis_block);
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

fn socket_addr(field: &str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|e| invalid(field, format!("{value:?} is not ip:port ({e})")))
}

fn file_exists(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("file {} does not exist", path.display()),
        ))
    }
}

fn common_files(
    identity: &KeyPairFiles,
    tls: &TlsFiles,
    channels: &[ChannelBootstrap],
) -> Result<(), ConfigError> {
    file_exists("identity.cert", &identity.cert)?;
    file_exists("identity.key", &identity.key)?;
    file_exists("tls.cert", &tls.cert)?;
    file_exists("tls.key", &tls.key)?;
    if tls.ca_roots.is_empty() {
        return Err(invalid("tls.ca_roots", "needs at least one CA certificate"));
    }
    for (i, ca) in tls.ca_roots.iter().enumerate() {
        file_exists(&format!("tls.ca_roots[{i}]"), ca)?;
    }
    if channels.is_empty() {
        return Err(invalid("channels", "needs at least one channel"));
    }
    for (i, c) in channels.iter().enumerate() {
        file_exists(&format!("channels[{i}].genesis_block"), &c.genesis_block)?;
    }
    Ok(())
}

fn log_settings(log: &LogSettings) -> Result<(), ConfigError> {
    match log.format.as_str() {
        "text" | "json" => Ok(()),
        other => Err(invalid(
            "log.format",
            format!("{other:?} is not one of text, json"),
        )),
    }
}

/// Parses TOML from `path`, then applies `prefix*` variables from `vars` as overrides.
pub fn load_toml<T: DeserializeOwned>(
    path: &Path,
    prefix: &str,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    for (var, value) in vars {
        if let Some(rest) = var.strip_prefix(prefix) {
            apply_override(&mut table, &var, rest, &value)?;
        }
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

fn apply_override(
    table: &mut toml::Table,
    var: &str,
    path: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    if keys.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty field name".into(),
        });
    }
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_owned(),
                    message: format!("`{key}` is not a table"),
                })
            }
        };
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    node.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        name: String,
        raft: RaftSettings,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn environment_overrides_nested_fields_with_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "name = \"a\"\n[raft]\nheartbeat_interval_ms = 100\n",
        );
        let vars = vec![
            (
                "X_RAFT__HEARTBEAT_INTERVAL_MS".to_string(),
                "42".to_string(),
            ),
            ("X_NAME".to_string(), "from env".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let s: Sample = load_toml(&p, "X_", vars.into_iter()).unwrap();
        assert_eq!(s.raft.heartbeat_interval_ms, 42);
        assert_eq!(s.name, "from env");
    }

    #[test]
    fn unknown_field_is_a_parse_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "name = \"a\"\n[raft]\nheartbeat_ms = 1\n");
        let err = load_toml::<Sample>(&p, "X_", std::iter::empty()).unwrap_err();
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
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
        let g: GossipSettings = load_toml(&p, "X_", std::iter::empty()).unwrap();
        assert_eq!(g.fanout, 5);
        assert_eq!(g.heartbeat_ms, gossip_defaults::heartbeat_ms());
        assert_eq!(g.static_leader, None);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load_toml::<Sample>(Path::new("/nonexistent/c.toml"), "X_", std::iter::empty())
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
