//! Node configuration files: the contract between the material generator, deployments and the
//! `orderer` / `peer` binaries.
//!
//! One TOML file per node, then environment overrides: `WEFT_ORDERER_RAFT__HEARTBEAT_INTERVAL_MS=80`
//! sets `raft.heartbeat_interval_ms` (prefix, then the field path with `__` between levels; the
//! value is read as TOML, else as a string). Relative paths are resolved against the config
//! file's directory. [`OrdererConfig::validate`] / [`PeerConfig::validate`] run once at start and
//! name the offending field.
//!
//! One submodule per kind of node (`orderer.rs`, `peer.rs`), the loader (`load.rs`); what
//! both share is here.
//!
//! Where a node listens (`listen_address`, `cluster_listen_address`, `gossip_listen_address`),
//! the address it advertises (an orderer's consenter host and port and its entry in
//! `orderer_endpoints` in the channel config; a peer's `gossip.external_endpoint`) and the
//! address it dials for another node (`address_overrides`, see [`AddressOverride`]) are
//! separate settings.

mod address;
mod load;
mod orderer;
mod peer;

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

pub use address::AddressOverride;
pub use load::load_toml;
pub use orderer::OrdererConfig;
pub use orderer::RaftSettings;
pub use peer::gossip_defaults;
pub use peer::ExternalChaincode;
pub use peer::GossipSettings;
pub use peer::PeerConfig;

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

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The files a node config names (resolved against the config file's directory on load).
trait NodeFiles {
    fn files(
        &mut self,
    ) -> (
        &mut PathBuf,
        &mut KeyPairFiles,
        &mut TlsFiles,
        &mut Vec<ChannelBootstrap>,
    );
}

/// Reads a node config: TOML, `prefix*` environment overrides, paths resolved against the
/// config file's directory. Validation is the caller's next step.
fn load_node_config<T: serde::de::DeserializeOwned + NodeFiles>(
    path: &Path,
    prefix: &str,
) -> Result<T, ConfigError> {
    let mut config: T = load_toml(path, prefix, std::env::vars())?;
    let (data_dir, identity, tls, channels) = config.files();
    resolve_paths(path, data_dir, identity, tls, channels);
    Ok(config)
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
