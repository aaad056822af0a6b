//! The channel config as operators read and edit it (`orderer admin config show|update`):
//! the `ChannelConfig` protobuf as JSON, certificates shown by subject and SHA-256
//! fingerprint instead of bytes.
//!
//! Editing: change any field and give the file to `config update`. A certificate is kept by
//! its `sha256` (it must be a certificate of the config in force; `subject` and `not_after`
//! are informational and ignored), or given anew as `pem` (then `sha256` is ignored). Lists
//! keep their order, so a view turned back into a config is byte-for-byte the config it was
//! made from ([`ConfigView::to_config`] of [`ConfigView::of`] is the identity).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;
use shared_proto::pb::config as pb;

/// Why a config view could not become a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigViewError {
    #[error("{path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("not a channel config view (`orderer admin config show --json` output): {0}")]
    Json(String),
}

/// A certificate: shown by subject and fingerprint; given by fingerprint or PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertView {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Hex SHA-256 of the DER.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_after: String,
    /// A new certificate (PEM); wins over `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyView {
    pub name: String,
    /// `null`: no policy set.
    pub rule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOusView {
    pub client_ou: String,
    pub peer_ou: String,
    pub admin_ou: String,
    pub orderer_ou: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgView {
    pub msp_id: String,
    pub root_certs: Vec<CertView>,
    pub tls_root_certs: Vec<CertView>,
    pub node_ous: Option<NodeOusView>,
    pub policies: Vec<PolicyView>,
    pub anchor_peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSizeView {
    pub message_count_max: u32,
    pub bytes_absolute_max: u32,
    pub bytes_preferred_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsenterView {
    pub id: u64,
    pub host: String,
    pub port: u32,
    pub msp_id: String,
    pub client_tls_cert: CertView,
    pub server_tls_cert: CertView,
    /// The signing certificate (block signatures).
    pub identity: CertView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdererView {
    pub batch_size: Option<BatchSizeView>,
    pub batch_timeout_ms: u64,
    pub retry_window_txs: u32,
    pub consenters: Vec<ConsenterView>,
    pub orderer_endpoints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaincodeView {
    pub name: String,
    pub version: String,
    pub endorsement_policy: Option<String>,
}

/// A whole channel config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigView {
    pub channel_id: String,
    /// The sequence of this config; `config update` submits it as sequence + 1.
    pub sequence: u64,
    pub application_orgs: Vec<OrgView>,
    pub orderer_orgs: Vec<OrgView>,
    pub orderer: Option<OrdererView>,
    pub policies: Vec<PolicyView>,
    pub chaincodes: Vec<ChaincodeView>,
}

/// Hex SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(shared_proto::hash::sha256(der))
}

impl CertView {
    pub fn of(der: &[u8]) -> Self {
        use x509_parser::prelude::FromDer as _;
        let (subject, not_after) = match x509_parser::certificate::X509Certificate::from_der(der) {
            Ok((_, cert)) => (
                cert.subject().to_string(),
                cert.validity().not_after.to_string(),
            ),
            Err(_) => ("(not an X.509 certificate)".to_owned(), String::new()),
        };
        CertView {
            subject,
            sha256: fingerprint(der),
            not_after,
            pem: None,
        }
    }

    /// The DER this view names: its PEM, else the certificate of `known` with its
    /// fingerprint. `path` names the field in errors.
    fn to_der(
        &self,
        path: &str,
        known: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<u8>, ConfigViewError> {
        let bad = |reason: String| ConfigViewError::Cert {
            path: path.to_owned(),
            reason,
        };
        if let Some(pem) = &self.pem {
            use x509_parser::prelude::FromDer as _;
            let der = shared_proto::msp::pem_to_der(pem)
                .map_err(|e| bad(format!("pem is not a PEM certificate: {e}")))?;
            x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|e| bad(format!("pem is not an X.509 certificate: {e}")))?;
            return Ok(der);
        }
        if self.sha256.is_empty() {
            return Err(bad(
                "give the certificate as \"pem\" or keep its \"sha256\"".into(),
            ));
        }
        known
            .get(&self.sha256.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                "sha256 {} is not a certificate of the config in force; give a new certificate \
                 as \"pem\"",
                self.sha256
            ))
            })
    }
}

fn policies_of(p: &[pb::NamedPolicy]) -> Vec<PolicyView> {
    p.iter()
        .map(|p| PolicyView {
            name: p.name.clone(),
            rule: p.policy.as_ref().map(|r| r.rule.clone()),
        })
        .collect()
}

fn policies_from(p: &[PolicyView]) -> Vec<pb::NamedPolicy> {
    p.iter()
        .map(|p| pb::NamedPolicy {
            name: p.name.clone(),
            policy: p.rule.clone().map(|rule| pb::Policy { rule }),
        })
        .collect()
}

fn org_of(o: &pb::Organization) -> OrgView {
    OrgView {
        msp_id: o.msp_id.clone(),
        root_certs: o.root_certs.iter().map(|c| CertView::of(c)).collect(),
        tls_root_certs: o.tls_root_certs.iter().map(|c| CertView::of(c)).collect(),
        node_ous: o.node_ous.as_ref().map(|n| NodeOusView {
            client_ou: n.client_ou.clone(),
            peer_ou: n.peer_ou.clone(),
            admin_ou: n.admin_ou.clone(),
            orderer_ou: n.orderer_ou.clone(),
        }),
        policies: policies_of(&o.policies),
        anchor_peers: o.anchor_peers.clone(),
    }
}

fn org_from(
    o: &OrgView,
    path: &str,
    known: &BTreeMap<String, Vec<u8>>,
) -> Result<pb::Organization, ConfigViewError> {
    let certs = |list: &[CertView], field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, c)| c.to_der(&format!("{path}.{field}[{i}]"), known))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(pb::Organization {
        msp_id: o.msp_id.clone(),
        root_certs: certs(&o.root_certs, "root_certs")?,
        tls_root_certs: certs(&o.tls_root_certs, "tls_root_certs")?,
        node_ous: o.node_ous.as_ref().map(|n| pb::NodeOus {
            client_ou: n.client_ou.clone(),
            peer_ou: n.peer_ou.clone(),
            admin_ou: n.admin_ou.clone(),
            orderer_ou: n.orderer_ou.clone(),
        }),
        policies: policies_from(&o.policies),
        anchor_peers: o.anchor_peers.clone(),
    })
}

/// Every certificate of `config` by fingerprint.
fn certificates(config: &pb::ChannelConfig) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut add = |der: &Vec<u8>| {
        all.insert(fingerprint(der), der.clone());
    };
    for o in config.application_orgs.iter().chain(&config.orderer_orgs) {
        o.root_certs
            .iter()
            .chain(&o.tls_root_certs)
            .for_each(&mut add);
    }
    for c in config.orderer.iter().flat_map(|o| &o.consenters) {
        [&c.client_tls_cert, &c.server_tls_cert, &c.identity]
            .into_iter()
            .for_each(&mut add);
    }
    all
}

impl ConfigView {
    pub fn of(config: &pb::ChannelConfig) -> Self {
        ConfigView {
            channel_id: config.channel_id.clone(),
            sequence: config.sequence,
            application_orgs: config.application_orgs.iter().map(org_of).collect(),
            orderer_orgs: config.orderer_orgs.iter().map(org_of).collect(),
            orderer: config.orderer.as_ref().map(|o| OrdererView {
                batch_size: o.batch_size.as_ref().map(|b| BatchSizeView {
                    message_count_max: b.message_count_max,
                    bytes_absolute_max: b.bytes_absolute_max,
                    bytes_preferred_max: b.bytes_preferred_max,
                }),
                batch_timeout_ms: o.batch_timeout_ms,
                retry_window_txs: o.retry_window_txs,
                consenters: o
                    .consenters
                    .iter()
                    .map(|c| ConsenterView {
                        id: c.id,
                        host: c.host.clone(),
                        port: c.port,
                        msp_id: c.msp_id.clone(),
                        client_tls_cert: CertView::of(&c.client_tls_cert),
                        server_tls_cert: CertView::of(&c.server_tls_cert),
                        identity: CertView::of(&c.identity),
                    })
                    .collect(),
                orderer_endpoints: o.orderer_endpoints.clone(),
            }),
            policies: policies_of(&config.policies),
            chaincodes: config
                .chaincodes
                .iter()
                .map(|c| ChaincodeView {
                    name: c.name.clone(),
                    version: c.version.clone(),
                    endorsement_policy: c.endorsement_policy.as_ref().map(|p| p.rule.clone()),
                })
                .collect(),
        }
    }

    /// Parses a view from JSON.
    pub fn from_json(text: &str) -> Result<Self, ConfigViewError> {
        serde_json::from_str(text).map_err(|e| ConfigViewError::Json(e.to_string()))
    }

    /// The config this view describes; certificates kept by fingerprint are looked up in
    /// `in_force` (the channel's config in force).
    pub fn to_config(
        &self,
        in_force: &pb::ChannelConfig,
    ) -> Result<pb::ChannelConfig, ConfigViewError> {
        let known = certificates(in_force);
        let orgs = |list: &[OrgView], field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, o)| org_from(o, &format!("{field}[{i}]"), &known))
                .collect::<Result<Vec<_>, _>>()
        };
        let orderer = match &self.orderer {
            None => None,
            Some(o) => {
                let mut consenters = Vec::new();
                for (i, c) in o.consenters.iter().enumerate() {
                    let path = |f: &str| format!("orderer.consenters[{i}].{f}");
                    consenters.push(pb::Consenter {
                        id: c.id,
                        host: c.host.clone(),
                        port: c.port,
                        msp_id: c.msp_id.clone(),
                        client_tls_cert: c
                            .client_tls_cert
                            .to_der(&path("client_tls_cert"), &known)?,
                        server_tls_cert: c
                            .server_tls_cert
                            .to_der(&path("server_tls_cert"), &known)?,
                        identity: c.identity.to_der(&path("identity"), &known)?,
                    });
                }
                Some(pb::OrdererConfig {
                    batch_size: o.batch_size.as_ref().map(|b| pb::BatchSize {
                        message_count_max: b.message_count_max,
                        bytes_absolute_max: b.bytes_absolute_max,
                        bytes_preferred_max: b.bytes_preferred_max,
                    }),
                    batch_timeout_ms: o.batch_timeout_ms,
                    consenters,
                    orderer_endpoints: o.orderer_endpoints.clone(),
                    retry_window_txs: o.retry_window_txs,
                })
            }
        };
        Ok(pb::ChannelConfig {
            channel_id: self.channel_id.clone(),
            sequence: self.sequence,
            application_orgs: orgs(&self.application_orgs, "application_orgs")?,
            orderer_orgs: orgs(&self.orderer_orgs, "orderer_orgs")?,
            orderer,
            policies: policies_from(&self.policies),
            chaincodes: self
                .chaincodes
                .iter()
                .map(|c| pb::ChaincodeDefinition {
                    name: c.name.clone(),
                    version: c.version.clone(),
                    endorsement_policy: c
                        .endorsement_policy
                        .clone()
                        .map(|rule| pb::Policy { rule }),
                })
                .collect(),
        })
    }
}

/// Every difference between two views, one line each (`path: old -> new`), sequence aside.
pub fn diff(old: &ConfigView, new: &ConfigView) -> Vec<String> {
    let value = |v: &ConfigView| {
        let mut v = v.clone();
        v.sequence = 0;
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
    };
    let mut out = Vec::new();
    diff_values("", &value(old), &value(new), &mut out);
    out
}

fn diff_values(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (a, b) if a == b => {}
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => diff_values(&join(k), va, vb, out),
                    None => out.push(format!("{}: removed", join(k))),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(format!("{}: added {vb}", join(k)));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let at = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => diff_values(&at, va, vb, out),
                    (Some(va), None) => out.push(format!("{at}: removed {}", short(va))),
                    (None, Some(vb)) => out.push(format!("{at}: added {}", short(vb))),
                    (None, None) => {}
                }
            }
        }
        (a, b) => out.push(format!("{path}: {a} -> {b}")),
    }
}

/// An item of a list, named by its `msp_id`, `name`, `id` or itself.
fn short(v: &serde_json::Value) -> String {
    for key in ["msp_id", "name", "id"] {
        if let Some(x) = v.get(key) {
            return format!("{key} {x}");
        }
    }
    let text = v.to_string();
    if text.len() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use prost::Message as _;

    use super::*;

    const SPEC: &str = r#"
name = "view"
[[orderer_orgs]]
msp_id = "OrdererMSP"
[[orderer_orgs.orderers]]
name = "orderer1"
port = 7050
cluster_port = 7051
ops_port = 7052
[[peer_orgs]]
msp_id = "Org1MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7060
gossip_port = 7061
ops_port = 7062
[[channels]]
id = "viewchannel"
[[channels.chaincodes]]
name = "token"
"#;

    fn genesis_config() -> (tempfile::TempDir, pb::ChannelConfig) {
        let dir = tempfile::tempdir().unwrap();
        let spec = shared_proto::material::NetworkSpec::from_toml(SPEC).unwrap();
        let generated =
            shared_proto::material::generate(&spec, &dir.path().join("net"), 1_790_000_000)
                .unwrap();
        let block = shared_proto::pb::common::Block::decode(
            std::fs::read(&generated.channels[0].1).unwrap().as_slice(),
        )
        .unwrap();
        (
            dir,
            shared_proto::channel::config_from_block(&block).unwrap(),
        )
    }

    #[test]
    fn view_round_trips_through_json_to_the_same_config_bytes() {
        let (_dir, config) = genesis_config();
        let json = serde_json::to_string_pretty(&ConfigView::of(&config)).unwrap();
        let back = ConfigView::from_json(&json)
            .unwrap()
            .to_config(&config)
            .unwrap();
        assert_eq!(back.encode_to_vec(), config.encode_to_vec());
    }

    #[test]
    fn certificate_given_as_pem_replaces_and_unknown_fingerprint_is_refused_naming_the_field() {
        let (_dir, config) = genesis_config();
        let mut view = ConfigView::of(&config);
        let root = config.application_orgs[0].root_certs[0].clone();
        let consenter = &mut view.orderer.as_mut().unwrap().consenters[0];
        consenter.identity = CertView {
            pem: Some(shared_proto::msp::der_to_pem("CERTIFICATE", &root)),
            sha256: "ignored".into(),
            ..CertView::default()
        };
        let back = view.to_config(&config).unwrap();
        assert_eq!(back.orderer.unwrap().consenters[0].identity, root);

        let consenter = &mut view.orderer.as_mut().unwrap().consenters[0];
        consenter.identity = CertView {
            sha256: "00".repeat(32),
            ..CertView::default()
        };
        let err = view.to_config(&config).unwrap_err().to_string();
        assert!(
            err.starts_with("orderer.consenters[0].identity: sha256 0000"),
            "{err}"
        );
    }

    #[test]
    fn diff_names_each_changed_field() {
        let (_dir, config) = genesis_config();
        let old = ConfigView::of(&config);
        let mut new = old.clone();
        new.sequence += 1;
        assert!(diff(&old, &new).is_empty());
        new.orderer
            .as_mut()
            .unwrap()
            .batch_size
            .as_mut()
            .unwrap()
            .message_count_max = 7;
        new.orderer
            .as_mut()
            .unwrap()
            .orderer_endpoints
            .push("x:1".into());
        let lines = diff(&old, &new);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("orderer.batch_size.message_count_max: "),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("-> 7"), "{lines:?}");
        assert_eq!(lines[1], "orderer.orderer_endpoints[1]: added \"x:1\"");
    }
}
