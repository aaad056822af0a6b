//! Writes the material a [`NetworkSpec`] describes.

use std::path::Path;
use std::path::PathBuf;

use prost::Message as _;

use super::spec::ChannelSpec;
use super::spec::NetworkSpec;
use super::MaterialError;
use crate::channel;
use crate::msp::CertificateAuthority;
use crate::msp::IssuedCert;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::msp::TlsCert;
use crate::msp::TlsCertificateAuthority;
use crate::msp::Usage;
use crate::msp::Validity;
use crate::node_config::ChannelBootstrap;
use crate::node_config::GossipSettings;
use crate::node_config::KeyPairFiles;
use crate::node_config::LogSettings;
use crate::node_config::OrdererConfig;
use crate::node_config::PeerConfig;
use crate::node_config::RaftSettings;
use crate::node_config::TlsFiles;
use crate::pb::config as cfg;

/// Where one node's material lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMaterial {
    pub name: String,
    pub msp_id: String,
    pub dir: PathBuf,
    /// `orderer.toml` or `peer.toml` inside `dir`.
    pub config: PathBuf,
}

/// Where one user's (Admin or client) material lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMaterial {
    pub name: String,
    pub msp_id: String,
    pub role: Role,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

/// The paths of everything generated for a spec (computable without generating).
#[derive(Debug, Clone)]
pub struct Generated {
    pub dir: PathBuf,
    pub spec: NetworkSpec,
    pub orderers: Vec<NodeMaterial>,
    pub peers: Vec<NodeMaterial>,
    pub users: Vec<UserMaterial>,
    /// (channel id, genesis block path)
    pub channels: Vec<(String, PathBuf)>,
    /// Every org's TLS CA certificate.
    pub tls_ca_certs: Vec<PathBuf>,
}

impl Generated {
    /// The layout of `spec`'s material under `dir`.
    pub fn layout(spec: &NetworkSpec, dir: &Path) -> Self {
        let org_dir = |msp: &str| dir.join("orgs").join(msp);
        let node = |msp: &str, kind: &str, name: &str, file: &str| {
            let d = org_dir(msp).join(kind).join(name);
            NodeMaterial {
                name: name.to_owned(),
                msp_id: msp.to_owned(),
                config: d.join(file),
                dir: d,
            }
        };
        let orderers = spec
            .orderer_orgs
            .iter()
            .flat_map(|o| {
                o.orderers
                    .iter()
                    .map(|n| node(&o.msp_id, "orderers", &n.name, "orderer.toml"))
            })
            .collect();
        let peers = spec
            .peer_orgs
            .iter()
            .flat_map(|o| {
                o.peers
                    .iter()
                    .map(|n| node(&o.msp_id, "peers", &n.name, "peer.toml"))
            })
            .collect();
        let user = |msp: &str, name: &str, role: Role| {
            let d = org_dir(msp).join("users").join(name);
            UserMaterial {
                name: name.to_owned(),
                msp_id: msp.to_owned(),
                role,
                cert: d.join("msp/cert.pem"),
                key: d.join("msp/key.pem"),
                tls_cert: d.join("tls/cert.pem"),
                tls_key: d.join("tls/key.pem"),
            }
        };
        let mut users = Vec::new();
        for o in &spec.orderer_orgs {
            users.push(user(&o.msp_id, "Admin", Role::Admin));
        }
        for o in &spec.peer_orgs {
            users.push(user(&o.msp_id, "Admin", Role::Admin));
            users.extend(o.users.iter().map(|u| user(&o.msp_id, u, Role::Client)));
        }
        let all_orgs = spec
            .orderer_orgs
            .iter()
            .map(|o| &o.msp_id)
            .chain(spec.peer_orgs.iter().map(|o| &o.msp_id));
        Generated {
            dir: dir.to_path_buf(),
            orderers,
            peers,
            users,
            channels: spec
                .channels
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        dir.join("channels").join(&c.id).join("genesis.block"),
                    )
                })
                .collect(),
            tls_ca_certs: all_orgs
                .map(|m| org_dir(m).join("tlsca/cert.pem"))
                .collect(),
            spec: spec.clone(),
        }
    }

    /// The layout of material generated earlier into `dir` (reads `dir/network.toml`).
    pub fn load(dir: &Path) -> Result<Self, MaterialError> {
        let path = dir.join("network.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| io(&path, source))?;
        Ok(Self::layout(&NetworkSpec::from_toml(&text)?, dir))
    }

    pub fn user(&self, msp_id: &str, name: &str) -> Option<&UserMaterial> {
        self.users
            .iter()
            .find(|u| u.msp_id == msp_id && u.name == name)
    }
}

fn io(path: &Path, source: std::io::Error) -> MaterialError {
    MaterialError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), MaterialError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| io(path, e))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn write_pair(dir: &Path, cert: &IssuedCert) -> Result<(), MaterialError> {
    write(&dir.join("cert.pem"), cert.cert_pem().as_bytes(), false)?;
    write(&dir.join("key.pem"), cert.key_pem()?.as_bytes(), true)
}

fn write_tls_pair(dir: &Path, cert: &TlsCert) -> Result<(), MaterialError> {
    write(&dir.join("cert.pem"), cert.cert_pem().as_bytes(), false)?;
    write(&dir.join("key.pem"), cert.key_pem().as_bytes(), true)
}

fn to_toml<T: serde::Serialize>(what: &str, value: &T) -> Result<String, MaterialError> {
    toml::to_string(value).map_err(|e| MaterialError::Encode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

struct OrgCas {
    msp_id: String,
    ca: CertificateAuthority,
    tlsca: TlsCertificateAuthority,
}

/// Generates all material for `spec` into `out` (which must be absent or empty), as of
/// `now_unix`. Every genesis block is loaded back and checked before this returns.
pub fn generate(spec: &NetworkSpec, out: &Path, now_unix: i64) -> Result<Generated, MaterialError> {
    spec.validate()?;
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| io(out, e))?;
        if entries.next().is_some() {
            return Err(MaterialError::NotEmpty {
                path: out.display().to_string(),
            });
        }
    }
    let layout = Generated::layout(spec, out);
    let validity = Validity::days_from(now_unix, spec.validity_days);
    write(
        &out.join("network.toml"),
        to_toml("network spec", spec)?.as_bytes(),
        false,
    )?;

    let org_ids = spec
        .orderer_orgs
        .iter()
        .map(|o| &o.msp_id)
        .chain(spec.peer_orgs.iter().map(|o| &o.msp_id));
    let mut cas = Vec::new();
    for msp_id in org_ids {
        let ca = CertificateAuthority::generate(&format!("ca.{msp_id}"), msp_id, validity)?;
        let tlsca = TlsCertificateAuthority::generate(
            &format!("tlsca.{msp_id}"),
            msp_id,
            spec.tls_key_algorithm,
            validity,
        )?;
        let org_dir = out.join("orgs").join(msp_id);
        write(
            &org_dir.join("ca/cert.pem"),
            ca.cert_pem().as_bytes(),
            false,
        )?;
        write(&org_dir.join("ca/key.pem"), ca.key_pem()?.as_bytes(), true)?;
        write(
            &org_dir.join("tlsca/cert.pem"),
            tlsca.cert_pem().as_bytes(),
            false,
        )?;
        write(
            &org_dir.join("tlsca/key.pem"),
            tlsca.key_pem().as_bytes(),
            true,
        )?;
        cas.push(OrgCas {
            msp_id: msp_id.clone(),
            ca,
            tlsca,
        });
    }
    let cas_of = |msp: &str| cas.iter().find(|c| c.msp_id == msp);

    // Users: Admins of every org, clients of peer orgs.
    let mut orderer_admin = None;
    for u in &layout.users {
        let Some(org) = cas_of(&u.msp_id) else {
            continue;
        };
        let cert = org
            .ca
            .issue(&u.name, Usage::Signing(u.role), &[], validity)?;
        let tls = org.tlsca.issue(&u.name, &[], validity)?;
        let dir = u.cert.parent().unwrap_or(out);
        write_pair(dir, &cert)?;
        write_tls_pair(u.tls_cert.parent().unwrap_or(out), &tls)?;
        if orderer_admin.is_none() && u.role == Role::Admin {
            orderer_admin = Some(SigningIdentity::new(&u.msp_id, cert.cert_der, cert.key)?);
        }
    }

    // Orderers: identities, TLS, consenter entries.
    let ids = spec.orderer_ids();
    let mut consenters = Vec::new();
    let mut endpoints = Vec::new();
    let orderer_specs = spec.orderer_orgs.iter().flat_map(|o| &o.orderers);
    for ((node, o), id) in layout.orderers.iter().zip(orderer_specs).zip(&ids) {
        let Some(org) = cas_of(&node.msp_id) else {
            continue;
        };
        let sans = vec![
            o.host.clone(),
            o.name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        let cert = org
            .ca
            .issue(&o.name, Usage::Signing(Role::Orderer), &[], validity)?;
        let tls = org.tlsca.issue(&o.name, &sans, validity)?;
        write_pair(&node.dir.join("msp"), &cert)?;
        write_tls_pair(&node.dir.join("tls"), &tls)?;
        consenters.push(cfg::Consenter {
            id: *id,
            host: o.host.clone(),
            port: u32::from(o.cluster_port),
            msp_id: node.msp_id.clone(),
            client_tls_cert: tls.cert_der.clone(),
            server_tls_cert: tls.cert_der.clone(),
            identity: cert.cert_der.clone(),
        });
        endpoints.push(format!("{}:{}", o.host, o.port));
        let config = OrdererConfig {
            network: spec.name.clone(),
            node_id: *id,
            msp_id: node.msp_id.clone(),
            listen_address: format!("{}:{}", listen_ip(&o.host), o.port),
            cluster_listen_address: format!("{}:{}", listen_ip(&o.host), o.cluster_port),
            ops_listen_address: format!("{}:{}", listen_ip(&o.host), o.ops_port),
            data_dir: "data".into(),
            identity: KeyPairFiles {
                cert: "msp/cert.pem".into(),
                key: "msp/key.pem".into(),
            },
            tls: tls_files(&layout),
            channels: layout
                .channels
                .iter()
                .map(|(id, _)| genesis_ref(id))
                .collect(),
            raft: RaftSettings::default(),
            log: LogSettings::default(),
            address_overrides: Vec::new(),
            ready_requires_every_channel: false,
        };
        write(
            &node.config,
            to_toml("orderer config", &config)?.as_bytes(),
            false,
        )?;
    }

    // Peers.
    let peer_specs = spec
        .peer_orgs
        .iter()
        .flat_map(|o| o.peers.iter().map(move |p| (o, p)));
    for (node, (org_spec, p)) in layout.peers.iter().zip(peer_specs) {
        let Some(org) = cas_of(&node.msp_id) else {
            continue;
        };
        let sans = vec![
            p.host.clone(),
            p.name.clone(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        let cert = org
            .ca
            .issue(&p.name, Usage::Signing(Role::Peer), &[], validity)?;
        let tls = org.tlsca.issue(&p.name, &sans, validity)?;
        write_pair(&node.dir.join("msp"), &cert)?;
        write_tls_pair(&node.dir.join("tls"), &tls)?;
        let channels = spec
            .channels
            .iter()
            .filter(|c| channel_orgs(spec, c).contains(&node.msp_id))
            .map(|c| genesis_ref(&c.id))
            .collect();
        let bootstrap = org_spec
            .peers
            .iter()
            .filter(|other| other.name != p.name)
            .map(|other| format!("{}:{}", other.host, other.gossip_port))
            .collect();
        let config = PeerConfig {
            network: spec.name.clone(),
            name: p.name.clone(),
            msp_id: node.msp_id.clone(),
            listen_address: format!("{}:{}", listen_ip(&p.host), p.port),
            gossip_listen_address: format!("{}:{}", listen_ip(&p.host), p.gossip_port),
            ops_listen_address: format!("{}:{}", listen_ip(&p.host), p.ops_port),
            data_dir: "data".into(),
            identity: KeyPairFiles {
                cert: "msp/cert.pem".into(),
                key: "msp/key.pem".into(),
            },
            tls: tls_files(&layout),
            channels,
            gossip: GossipSettings {
                bootstrap,
                orderer_connected: p.orderer_connected,
                external_endpoint: format!("{}:{}", p.host, p.gossip_port),
                ..GossipSettings::default()
            },
            external_chaincodes: Vec::new(),
            log: LogSettings::default(),
            address_overrides: Vec::new(),
        };
        write(
            &node.config,
            to_toml("peer config", &config)?.as_bytes(),
            false,
        )?;
    }

    // Channels: genesis blocks, each checked by loading it back.
    let Some(admin) = orderer_admin else {
        return Err(MaterialError::Spec {
            field: "orderer_orgs".into(),
            message: "needs at least one orderer org".into(),
        });
    };
    for ((id, path), ch) in layout.channels.iter().zip(&spec.channels) {
        let config = channel_config(spec, ch, &cas, &consenters, &endpoints);
        let nonce = crate::hash::sha256(format!("{}/{}/{now_unix}", spec.name, id).as_bytes());
        let ts = u64::try_from(now_unix).unwrap_or(0).saturating_mul(1000);
        let block = channel::genesis_block(&config, &admin, &nonce, ts);
        channel::Channel::from_config_block(&block).map_err(|source| MaterialError::Channel {
            channel: id.clone(),
            source,
        })?;
        write(path, &block.encode_to_vec(), false)?;
    }
    Ok(layout)
}

/// Listen on the spec's host when it is an IP address; on all interfaces for a DNS name
/// (containers reach each other by name).
fn listen_ip(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        host.to_owned()
    } else {
        "0.0.0.0".into()
    }
}

fn tls_files(layout: &Generated) -> TlsFiles {
    TlsFiles {
        cert: "tls/cert.pem".into(),
        key: "tls/key.pem".into(),
        ca_roots: layout
            .tls_ca_certs
            .iter()
            .filter_map(|p| p.strip_prefix(&layout.dir).ok())
            .map(|rel| Path::new("../../../..").join(rel))
            .collect(),
    }
}

fn genesis_ref(channel_id: &str) -> ChannelBootstrap {
    ChannelBootstrap {
        genesis_block: Path::new("../../../../channels")
            .join(channel_id)
            .join("genesis.block"),
    }
}

fn channel_orgs(spec: &NetworkSpec, ch: &ChannelSpec) -> Vec<String> {
    match &ch.orgs {
        Some(orgs) => orgs.clone(),
        None => spec.peer_orgs.iter().map(|o| o.msp_id.clone()).collect(),
    }
}

fn policy(name: &str, rule: String) -> cfg::NamedPolicy {
    cfg::NamedPolicy {
        name: name.to_owned(),
        policy: Some(cfg::Policy { rule }),
    }
}

fn organization(
    org: &OrgCas,
    policies: Vec<cfg::NamedPolicy>,
    anchors: Vec<String>,
) -> cfg::Organization {
    cfg::Organization {
        msp_id: org.msp_id.clone(),
        root_certs: vec![org.ca.cert_der().to_vec()],
        tls_root_certs: vec![org.tlsca.cert_der().to_vec()],
        node_ous: Some(cfg::NodeOus {
            client_ou: Role::Client.as_str().into(),
            peer_ou: Role::Peer.as_str().into(),
            admin_ou: Role::Admin.as_str().into(),
            orderer_ou: Role::Orderer.as_str().into(),
        }),
        policies,
        anchor_peers: anchors,
    }
}

fn channel_config(
    spec: &NetworkSpec,
    ch: &ChannelSpec,
    cas: &[OrgCas],
    consenters: &[cfg::Consenter],
    endpoints: &[String],
) -> cfg::ChannelConfig {
    let members = channel_orgs(spec, ch);
    let application_orgs = spec
        .peer_orgs
        .iter()
        .filter(|o| members.contains(&o.msp_id))
        .filter_map(|o| {
            let ca = cas.iter().find(|c| c.msp_id == o.msp_id)?;
            let m = &o.msp_id;
            let anchors = o
                .peers
                .first()
                .map(|p| format!("{}:{}", p.host, p.gossip_port))
                .into_iter()
                .collect();
            Some(organization(
                ca,
                vec![
                    policy(
                        "Readers",
                        format!("OR('{m}.admin', '{m}.peer', '{m}.client')"),
                    ),
                    policy("Writers", format!("OR('{m}.admin', '{m}.client')")),
                    policy("Admins", format!("OR('{m}.admin')")),
                    policy("Endorsement", format!("OR('{m}.peer')")),
                ],
                anchors,
            ))
        })
        .collect();
    let orderer_orgs = spec
        .orderer_orgs
        .iter()
        .filter_map(|o| {
            let ca = cas.iter().find(|c| c.msp_id == o.msp_id)?;
            let m = &o.msp_id;
            Some(organization(
                ca,
                vec![
                    policy("Readers", format!("OR('{m}.member')")),
                    policy("Writers", format!("OR('{m}.admin', '{m}.client')")),
                    policy("Admins", format!("OR('{m}.admin')")),
                    policy("BlockValidation", format!("OR('{m}.orderer')")),
                ],
                Vec::new(),
            ))
        })
        .collect();
    let p = &ch.policies;
    cfg::ChannelConfig {
        channel_id: ch.id.clone(),
        sequence: 0,
        application_orgs,
        orderer_orgs,
        orderer: Some(cfg::OrdererConfig {
            batch_size: Some(cfg::BatchSize {
                message_count_max: ch.batch.message_count_max,
                bytes_absolute_max: ch.batch.bytes_absolute_max,
                bytes_preferred_max: ch.batch.bytes_preferred_max,
            }),
            batch_timeout_ms: ch.batch.timeout_ms,
            retry_window_txs: ch.batch.retry_window_txs,
            consenters: consenters.to_vec(),
            orderer_endpoints: endpoints.to_vec(),
        }),
        policies: vec![
            policy(channel::READERS, p.readers.clone()),
            policy(channel::WRITERS, p.writers.clone()),
            policy(channel::ADMINS, p.admins.clone()),
            policy(channel::BLOCK_VALIDATION, p.block_validation.clone()),
        ],
        chaincodes: ch
            .chaincodes
            .iter()
            .map(|c| cfg::ChaincodeDefinition {
                name: c.name.clone(),
                version: c.version.clone(),
                endorsement_policy: Some(cfg::Policy {
                    rule: c.endorsement_policy.clone(),
                }),
            })
            .collect(),
    }
}
