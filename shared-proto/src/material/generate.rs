//! Writes the material a [`NetworkSpec`] describes.

use std::path::Path;
use std::path::PathBuf;

use super::issue;
use super::issue::io;
use super::issue::OrgCas;
use super::issue::OrgRoots;
use super::spec::NetworkSpec;
use super::MaterialError;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::msp::Validity;

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
    issue::write_spec(out, spec)?;

    let org_ids = spec
        .orderer_orgs
        .iter()
        .map(|o| &o.msp_id)
        .chain(spec.peer_orgs.iter().map(|o| &o.msp_id));
    let mut cas = Vec::new();
    for msp_id in org_ids {
        let org = OrgCas::generate(msp_id, spec.tls_key_algorithm, validity)?;
        org.write(&out.join("orgs").join(msp_id))?;
        cas.push(org);
    }
    let cas_of = |msp: &str| cas.iter().find(|c| c.msp_id == msp);

    // Users: Admins of every org, clients of peer orgs.
    let mut orderer_admin = None;
    for u in &layout.users {
        let Some(org) = cas_of(&u.msp_id) else {
            continue;
        };
        let cert = issue::issue_user(org, u, validity)?;
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
        consenters.push(issue::issue_orderer(&layout, org, node, o, *id, validity)?);
        endpoints.push(issue::orderer_endpoint(o));
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
        let bootstrap = issue::bootstrap_of(org_spec, &p.name);
        issue::issue_peer(&layout, org, node, p, bootstrap, validity)?;
    }

    // Channels: genesis blocks, each checked by loading it back.
    let Some(admin) = orderer_admin else {
        return Err(MaterialError::Spec {
            field: "orderer_orgs".into(),
            message: "needs at least one orderer org".into(),
        });
    };
    let roots: Vec<OrgRoots> = cas.iter().map(OrgCas::roots).collect();
    for ((_, path), ch) in layout.channels.iter().zip(&spec.channels) {
        issue::write_genesis(
            spec,
            ch,
            &roots,
            &consenters,
            &endpoints,
            &admin,
            now_unix,
            path,
        )?;
    }
    Ok(layout)
}
