//! Issuing one member's material: an org's CAs, a user's, an orderer's or a peer's keys,
//! certificates and config file, a channel's genesis block. Shared by [`super::generate`] (a
//! whole network) and [`super::extend`] (one more node, org or channel of an existing one), so
//! a node added later is issued exactly as one generated with the network.

use std::path::Path;

use prost::Message as _;

use super::generate::Generated;
use super::generate::NodeMaterial;
use super::generate::UserMaterial;
use super::spec::ChannelSpec;
use super::spec::NetworkSpec;
use super::spec::OrdererSpec;
use super::spec::PeerOrgSpec;
use super::spec::PeerSpec;
use super::MaterialError;
use crate::channel;
use crate::msp::CertificateAuthority;
use crate::msp::IssuedCert;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::msp::TlsCert;
use crate::msp::TlsCertificateAuthority;
use crate::msp::TlsKeyAlgorithm;
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

pub(super) fn io(path: &Path, source: std::io::Error) -> MaterialError {
    MaterialError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), MaterialError> {
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

pub(super) fn write_tls_pair(dir: &Path, cert: &TlsCert) -> Result<(), MaterialError> {
    write(&dir.join("cert.pem"), cert.cert_pem().as_bytes(), false)?;
    write(&dir.join("key.pem"), cert.key_pem().as_bytes(), true)
}

fn read_text(path: &Path) -> Result<String, MaterialError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn to_toml<T: serde::Serialize>(what: &str, value: &T) -> Result<String, MaterialError> {
    toml::to_string(value).map_err(|e| MaterialError::Encode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// Writes `dir/network.toml`, replacing it whole (written beside it, then renamed), so a reader
/// sees the old spec or the new one, never half of one.
pub(super) fn write_spec(dir: &Path, spec: &NetworkSpec) -> Result<(), MaterialError> {
    let path = dir.join("network.toml");
    let next = dir.join("network.toml.next");
    write(&next, to_toml("network spec", spec)?.as_bytes(), false)?;
    std::fs::rename(&next, &path).map_err(|e| io(&path, e))
}

/// An org's two CAs: one for signing identities, one for TLS.
pub(super) struct OrgCas {
    pub msp_id: String,
    ca: CertificateAuthority,
    tlsca: TlsCertificateAuthority,
    /// The CA certificate's end: nothing it issues is valid for longer.
    not_after_unix: i64,
}

impl OrgCas {
    pub fn generate(
        msp_id: &str,
        algorithm: TlsKeyAlgorithm,
        validity: Validity,
    ) -> Result<Self, MaterialError> {
        let ca = CertificateAuthority::generate(&format!("ca.{msp_id}"), msp_id, validity)?;
        let tlsca = TlsCertificateAuthority::generate(
            &format!("tlsca.{msp_id}"),
            msp_id,
            algorithm,
            validity,
        )?;
        Ok(OrgCas {
            msp_id: msp_id.to_owned(),
            ca,
            tlsca,
            not_after_unix: validity.not_after_unix,
        })
    }

    /// `org_dir/{ca,tlsca}/{cert,key}.pem`.
    pub fn write(&self, org_dir: &Path) -> Result<(), MaterialError> {
        let ca = org_dir.join("ca");
        write(&ca.join("cert.pem"), self.ca.cert_pem().as_bytes(), false)?;
        write(&ca.join("key.pem"), self.ca.key_pem()?.as_bytes(), true)?;
        let tlsca = org_dir.join("tlsca");
        write(
            &tlsca.join("cert.pem"),
            self.tlsca.cert_pem().as_bytes(),
            false,
        )?;
        write(
            &tlsca.join("key.pem"),
            self.tlsca.key_pem().as_bytes(),
            true,
        )
    }

    /// The CAs [`OrgCas::write`] wrote into `org_dir`.
    pub fn load(org_dir: &Path, msp_id: &str) -> Result<Self, MaterialError> {
        let text = |what: &str, file: &str| read_text(&org_dir.join(what).join(file));
        let ca_cert = text("ca", "cert.pem")?;
        let ca = CertificateAuthority::from_pem(&ca_cert, &text("ca", "key.pem")?)?;
        let tlsca = TlsCertificateAuthority::from_pem(
            &text("tlsca", "cert.pem")?,
            &text("tlsca", "key.pem")?,
            msp_id,
        )?;
        let not_after_unix = crate::msp::CertInfo::from_der(ca.cert_der())?.not_after_unix;
        Ok(OrgCas {
            msp_id: msp_id.to_owned(),
            ca,
            tlsca,
            not_after_unix,
        })
    }

    pub fn roots(&self) -> OrgRoots {
        OrgRoots {
            msp_id: self.msp_id.clone(),
            ca_cert_der: self.ca.cert_der().to_vec(),
            tls_ca_cert_der: self.tlsca.cert_der().to_vec(),
        }
    }

    /// `validity`, ending no later than the CA does.
    pub(super) fn within(&self, validity: Validity) -> Validity {
        Validity {
            not_after_unix: validity.not_after_unix.min(self.not_after_unix),
            ..validity
        }
    }

    /// A TLS certificate (new key) for `name` with `sans`, within the CA's validity.
    pub fn issue_tls(
        &self,
        name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<TlsCert, MaterialError> {
        Ok(self.tlsca.issue(name, sans, self.within(validity))?)
    }

    /// A signing certificate for `name` in `role`, and a TLS certificate with `sans`.
    fn issue_pair(
        &self,
        name: &str,
        role: Role,
        sans: &[String],
        validity: Validity,
    ) -> Result<(IssuedCert, TlsCert), MaterialError> {
        let validity = self.within(validity);
        let cert = self.ca.issue(name, Usage::Signing(role), &[], validity)?;
        let tls = self.tlsca.issue(name, sans, validity)?;
        Ok((cert, tls))
    }
}

/// An org's CA certificates: what a channel config holds of it.
pub(super) struct OrgRoots {
    pub msp_id: String,
    ca_cert_der: Vec<u8>,
    tls_ca_cert_der: Vec<u8>,
}

impl OrgRoots {
    /// The certificates of the CAs in `org_dir` (keys not read).
    pub fn load(org_dir: &Path, msp_id: &str) -> Result<Self, MaterialError> {
        let der = |what: &str| -> Result<Vec<u8>, MaterialError> {
            let path = org_dir.join(what).join("cert.pem");
            Ok(crate::msp::pem_to_der(&read_text(&path)?)?)
        };
        Ok(OrgRoots {
            msp_id: msp_id.to_owned(),
            ca_cert_der: der("ca")?,
            tls_ca_cert_der: der("tlsca")?,
        })
    }
}

/// A user's signing and TLS material; the signing certificate with its key.
pub(super) fn issue_user(
    org: &OrgCas,
    user: &UserMaterial,
    validity: Validity,
) -> Result<IssuedCert, MaterialError> {
    let (cert, tls) = org.issue_pair(&user.name, user.role, &[], validity)?;
    let fallback = Path::new(".");
    write_pair(user.cert.parent().unwrap_or(fallback), &cert)?;
    write_tls_pair(user.tls_cert.parent().unwrap_or(fallback), &tls)?;
    Ok(cert)
}

/// The names a node's TLS certificate is valid for.
pub(super) fn node_sans(host: &str, name: &str) -> Vec<String> {
    vec![
        host.to_owned(),
        name.to_owned(),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// An orderer's identity, TLS certificate and `orderer.toml` (Raft node `id`, every channel of
/// `net` as a bootstrap channel); its consenter entry.
pub(super) fn issue_orderer(
    net: &Generated,
    org: &OrgCas,
    node: &NodeMaterial,
    o: &OrdererSpec,
    id: u64,
    validity: Validity,
) -> Result<cfg::Consenter, MaterialError> {
    let (cert, tls) = org.issue_pair(
        &o.name,
        Role::Orderer,
        &node_sans(&o.host, &o.name),
        validity,
    )?;
    write_pair(&node.dir.join("msp"), &cert)?;
    write_tls_pair(&node.dir.join("tls"), &tls)?;
    let config = OrdererConfig {
        network: net.spec.name.clone(),
        node_id: id,
        msp_id: node.msp_id.clone(),
        listen_address: format!("{}:{}", listen_ip(&o.host), o.port),
        cluster_listen_address: format!("{}:{}", listen_ip(&o.host), o.cluster_port),
        ops_listen_address: format!("{}:{}", listen_ip(&o.host), o.ops_port),
        data_dir: "data".into(),
        identity: key_pair_files(),
        tls: tls_files(net),
        channels: net.channels.iter().map(|(id, _)| genesis_ref(id)).collect(),
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
    Ok(cfg::Consenter {
        id,
        host: o.host.clone(),
        port: u32::from(o.cluster_port),
        msp_id: node.msp_id.clone(),
        client_tls_cert: tls.cert_der.clone(),
        server_tls_cert: tls.cert_der,
        identity: cert.cert_der,
    })
}

/// Where clients reach orderer `o`.
pub(super) fn orderer_endpoint(o: &OrdererSpec) -> String {
    format!("{}:{}", o.host, o.port)
}

/// Gossip bootstrap of peer `name`: the other peers of its org.
pub(super) fn bootstrap_of(org: &PeerOrgSpec, name: &str) -> Vec<String> {
    org.peers
        .iter()
        .filter(|other| other.name != name)
        .map(|other| format!("{}:{}", other.host, other.gossip_port))
        .collect()
}

/// A peer's identity, TLS certificate and `peer.toml` (the channels of `net` its org is on).
pub(super) fn issue_peer(
    net: &Generated,
    org: &OrgCas,
    node: &NodeMaterial,
    p: &PeerSpec,
    bootstrap: Vec<String>,
    validity: Validity,
) -> Result<(), MaterialError> {
    let (cert, tls) =
        org.issue_pair(&p.name, Role::Peer, &node_sans(&p.host, &p.name), validity)?;
    write_pair(&node.dir.join("msp"), &cert)?;
    write_tls_pair(&node.dir.join("tls"), &tls)?;
    let channels = net
        .spec
        .channels
        .iter()
        .filter(|c| channel_orgs(&net.spec, c).contains(&node.msp_id))
        .map(|c| genesis_ref(&c.id))
        .collect();
    let config = PeerConfig {
        network: net.spec.name.clone(),
        name: p.name.clone(),
        msp_id: node.msp_id.clone(),
        listen_address: format!("{}:{}", listen_ip(&p.host), p.port),
        gossip_listen_address: format!("{}:{}", listen_ip(&p.host), p.gossip_port),
        ops_listen_address: format!("{}:{}", listen_ip(&p.host), p.ops_port),
        data_dir: "data".into(),
        identity: key_pair_files(),
        tls: tls_files(net),
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
    )
}

/// Block 0 of channel `ch`, signed by `admin` (an orderer-org admin), loaded back to check it,
/// written to `path`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_genesis(
    spec: &NetworkSpec,
    ch: &ChannelSpec,
    orgs: &[OrgRoots],
    consenters: &[cfg::Consenter],
    endpoints: &[String],
    admin: &SigningIdentity,
    now_unix: i64,
    path: &Path,
) -> Result<(), MaterialError> {
    let config = channel_config(spec, ch, orgs, consenters, endpoints);
    let nonce = crate::hash::sha256(format!("{}/{}/{now_unix}", spec.name, ch.id).as_bytes());
    let ts = u64::try_from(now_unix).unwrap_or(0).saturating_mul(1000);
    let block = channel::genesis_block(&config, admin, &nonce, ts);
    channel::Channel::from_config_block(&block).map_err(|source| MaterialError::Channel {
        channel: ch.id.clone(),
        source,
    })?;
    write(path, &block.encode_to_vec(), false)
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

fn key_pair_files() -> KeyPairFiles {
    KeyPairFiles {
        cert: "msp/cert.pem".into(),
        key: "msp/key.pem".into(),
    }
}

fn tls_files(net: &Generated) -> TlsFiles {
    TlsFiles {
        cert: "tls/cert.pem".into(),
        key: "tls/key.pem".into(),
        ca_roots: net
            .tls_ca_certs
            .iter()
            .filter_map(|p| p.strip_prefix(&net.dir).ok())
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
    org: &OrgRoots,
    policies: Vec<cfg::NamedPolicy>,
    anchors: Vec<String>,
) -> cfg::Organization {
    cfg::Organization {
        msp_id: org.msp_id.clone(),
        root_certs: vec![org.ca_cert_der.clone()],
        tls_root_certs: vec![org.tls_ca_cert_der.clone()],
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

/// Application org `o` as a channel config holds it: CAs, policies, its first peer as anchor.
pub(super) fn application_org(o: &PeerOrgSpec, roots: &OrgRoots) -> cfg::Organization {
    let m = &o.msp_id;
    let anchors = o
        .peers
        .first()
        .map(|p| format!("{}:{}", p.host, p.gossip_port))
        .into_iter()
        .collect();
    organization(
        roots,
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
    )
}

fn orderer_org(roots: &OrgRoots) -> cfg::Organization {
    let m = &roots.msp_id;
    organization(
        roots,
        vec![
            policy("Readers", format!("OR('{m}.member')")),
            policy("Writers", format!("OR('{m}.admin', '{m}.client')")),
            policy("Admins", format!("OR('{m}.admin')")),
            policy("BlockValidation", format!("OR('{m}.orderer')")),
        ],
        Vec::new(),
    )
}

fn channel_config(
    spec: &NetworkSpec,
    ch: &ChannelSpec,
    orgs: &[OrgRoots],
    consenters: &[cfg::Consenter],
    endpoints: &[String],
) -> cfg::ChannelConfig {
    let roots_of = |msp: &str| orgs.iter().find(|r| r.msp_id == msp);
    let members = channel_orgs(spec, ch);
    let application_orgs = spec
        .peer_orgs
        .iter()
        .filter(|o| members.contains(&o.msp_id))
        .filter_map(|o| Some(application_org(o, roots_of(&o.msp_id)?)))
        .collect();
    let orderer_orgs = spec
        .orderer_orgs
        .iter()
        .filter_map(|o| Some(orderer_org(roots_of(&o.msp_id)?)))
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
