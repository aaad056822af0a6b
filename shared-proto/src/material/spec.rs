//! The network spec: one TOML file naming orgs, nodes, channels, policies and batch settings.

use serde::Deserialize;
use serde::Serialize;

use super::MaterialError;

/// Everything the generator needs to know about a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Written into every node config; tools refuse to mix material of two networks.
    pub name: String,
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// Key algorithm of every org's TLS CA and TLS certificates: `ecdsa-p256` (default; every
    /// TLS stack, gRPC's C core included) or `ed25519` (Rust and Go clients only). Signing
    /// identities are Ed25519 either way.
    #[serde(default)]
    pub tls_key_algorithm: crate::msp::TlsKeyAlgorithm,
    pub orderer_orgs: Vec<OrdererOrgSpec>,
    #[serde(default)]
    pub peer_orgs: Vec<PeerOrgSpec>,
    pub channels: Vec<ChannelSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdererOrgSpec {
    pub msp_id: String,
    pub orderers: Vec<OrdererSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdererSpec {
    pub name: String,
    /// Raft node id; defaults to the orderer's 1-based position across all orderer orgs.
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
    pub cluster_port: u16,
    pub ops_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerOrgSpec {
    pub msp_id: String,
    pub peers: Vec<PeerSpec>,
    /// Client identities to generate besides the org's `Admin`.
    #[serde(default = "default_users")]
    pub users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    pub port: u16,
    pub gossip_port: u16,
    pub ops_port: u16,
    /// `false`: the peer never connects to the orderers and gets blocks by gossip only.
    #[serde(default = "default_true")]
    pub orderer_connected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub id: String,
    /// Application orgs on the channel; default: every peer org.
    #[serde(default)]
    pub orgs: Option<Vec<String>>,
    #[serde(default)]
    pub batch: BatchSpec,
    #[serde(default)]
    pub policies: ChannelPolicySpec,
    #[serde(default)]
    pub chaincodes: Vec<ChaincodeSpec>,
}

/// Block cutting: a block is cut at `message_count_max` envelopes, before exceeding
/// `bytes_preferred_max`, or `timeout_ms` after its first envelope arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSpec {
    pub message_count_max: u32,
    pub bytes_absolute_max: u32,
    pub bytes_preferred_max: u32,
    pub timeout_ms: u64,
    /// Tx ids the orderers remember to drop retried envelopes; 0: the default (50,000).
    pub retry_window_txs: u32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            message_count_max: 500,
            bytes_absolute_max: 10 * 1024 * 1024,
            bytes_preferred_max: 2 * 1024 * 1024,
            timeout_ms: 100,
            retry_window_txs: 0,
        }
    }
}

/// Channel-level policies, in the policy language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPolicySpec {
    pub readers: String,
    pub writers: String,
    pub admins: String,
    pub block_validation: String,
}

impl Default for ChannelPolicySpec {
    fn default() -> Self {
        ChannelPolicySpec {
            readers: "ANY Readers".into(),
            writers: "ANY Writers".into(),
            admins: "MAJORITY Admins".into(),
            block_validation: "ANY BlockValidation".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaincodeSpec {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default = "default_endorsement")]
    pub endorsement_policy: String,
}

fn default_validity_days() -> u32 {
    365
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_users() -> Vec<String> {
    vec!["User1".into()]
}
fn default_true() -> bool {
    true
}
fn default_version() -> String {
    "1.0".into()
}
fn default_endorsement() -> String {
    "MAJORITY Endorsement".into()
}

impl NetworkSpec {
    /// Parses a spec file's text; field errors name the field.
    pub fn from_toml(text: &str) -> Result<Self, MaterialError> {
        let spec: NetworkSpec = toml::from_str(text).map_err(|e| MaterialError::Spec {
            field: "(toml)".into(),
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Raft node ids of the orderers, in spec order.
    pub fn orderer_ids(&self) -> Vec<u64> {
        self.orderer_orgs
            .iter()
            .flat_map(|o| &o.orderers)
            .enumerate()
            .map(|(i, o)| o.id.unwrap_or(i as u64 + 1))
            .collect()
    }

    /// Checks names and references; the channel configs themselves are checked again when
    /// the generated genesis blocks are loaded.
    pub fn validate(&self) -> Result<(), MaterialError> {
        let bad = |field: String, message: String| MaterialError::Spec { field, message };
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                && !s.starts_with('.')
        };
        if !safe(&self.name) {
            return Err(bad(
                "name".into(),
                format!("{:?} must be [A-Za-z0-9._-]+", self.name),
            ));
        }
        if self.orderer_orgs.iter().all(|o| o.orderers.is_empty()) {
            return Err(bad(
                "orderer_orgs".into(),
                "needs at least one orderer".into(),
            ));
        }
        let mut msp_ids: Vec<&str> = Vec::new();
        let mut node_names: Vec<(&str, &str)> = Vec::new();
        let orgs = self
            .orderer_orgs
            .iter()
            .map(|o| {
                (
                    &o.msp_id,
                    o.orderers.iter().map(|n| &n.name).collect::<Vec<_>>(),
                )
            })
            .chain(self.peer_orgs.iter().map(|o| {
                let names = o.peers.iter().map(|p| &p.name).chain(&o.users);
                (&o.msp_id, names.collect())
            }));
        for (i, (msp_id, names)) in orgs.enumerate() {
            if !safe(msp_id) || msp_ids.contains(&msp_id.as_str()) {
                return Err(bad(
                    format!("org #{i} msp_id"),
                    format!("{msp_id:?} is empty, not [A-Za-z0-9._-]+ or not unique"),
                ));
            }
            msp_ids.push(msp_id);
            for name in names {
                if !safe(name) || name == "Admin" || node_names.contains(&(msp_id, name)) {
                    return Err(bad(
                        format!("{msp_id} node/user name"),
                        format!("{name:?} is invalid, reserved (Admin) or not unique"),
                    ));
                }
                node_names.push((msp_id, name));
            }
        }
        for o in &self.peer_orgs {
            if !o.peers.is_empty() && !o.peers.iter().any(|p| p.orderer_connected) {
                return Err(bad(
                    format!("{} peers.orderer_connected", o.msp_id),
                    "no peer of the org may connect to the orderers, so none would ever get a block; set orderer_connected = true on at least one".into(),
                ));
            }
        }
        let mut ids = self.orderer_ids();
        ids.sort_unstable();
        if ids.contains(&0) || ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad(
                "orderers.id".into(),
                "ids must be unique and non-zero".into(),
            ));
        }
        if self.channels.is_empty() {
            return Err(bad("channels".into(), "needs at least one channel".into()));
        }
        for (i, ch) in self.channels.iter().enumerate() {
            let taken = self.channels[..i].iter().any(|c| c.id == ch.id);
            if !safe(&ch.id) || taken {
                return Err(bad(
                    format!("channels[{i}].id"),
                    format!("{:?} is empty, not [A-Za-z0-9._-]+ or not unique", ch.id),
                ));
            }
            for org in ch.orgs.iter().flatten() {
                if !self.peer_orgs.iter().any(|p| &p.msp_id == org) {
                    return Err(bad(
                        format!("channels[{i}].orgs"),
                        format!("{org:?} is not a peer org of this spec"),
                    ));
                }
            }
        }
        Ok(())
    }
}
