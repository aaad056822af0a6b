//! The network material an operator holds (`devnet generate` / `shared_proto::material`):
//! where each orderer listens, its node id and files, and the admin identities that sign.

use std::path::Path;
use std::path::PathBuf;

use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::node_config::OrdererConfig;
use shared_proto::pb::config::Consenter;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;

use super::AdminClientError;

/// One orderer of the material.
#[derive(Debug, Clone)]
pub struct OrdererNode {
    pub name: String,
    pub msp_id: String,
    /// Raft node id: its `orderer.toml` (falls back to the spec's if that file is unreadable).
    pub node_id: u64,
    /// Broadcast, Deliver and Admin: host:port as the spec advertises it.
    pub address: String,
    /// Orderer-to-orderer: what its consenter entry advertises.
    pub cluster_host: String,
    pub cluster_port: u16,
    /// `orgs/<msp>/orderers/<name>/orderer.toml`.
    pub config: PathBuf,
}

/// An org admin: signs Admin requests and config updates, and presents its TLS certificate.
#[derive(Debug, Clone)]
pub struct Admin {
    pub msp_id: String,
    pub identity: SigningIdentity,
    tls_cert_pem: Vec<u8>,
    tls_key_pem: Vec<u8>,
}

/// A network's material, loaded from the directory `devnet generate` wrote.
#[derive(Debug, Clone)]
pub struct Network {
    pub generated: Generated,
    pub orderers: Vec<OrdererNode>,
    /// Every org's TLS CA certificate (PEM), to verify the orderers' server certificates.
    tls_ca_pem: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, AdminClientError> {
    std::fs::read(path).map_err(|e| AdminClientError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn pem_to_der(path: &Path) -> Result<Vec<u8>, AdminClientError> {
    let text = read(path)?;
    shared_proto::msp::pem_to_der(&String::from_utf8_lossy(&text)).map_err(|e| {
        AdminClientError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })
}

impl Network {
    /// Reads `dir/network.toml` and every orderer's `orderer.toml`.
    pub fn load(dir: &Path) -> Result<Self, AdminClientError> {
        let generated = Generated::load(dir).map_err(|e| AdminClientError::Material {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let specs: Vec<_> = generated
            .spec
            .orderer_orgs
            .iter()
            .flat_map(|o| &o.orderers)
            .collect();
        let ids = generated.spec.orderer_ids();
        let mut orderers = Vec::new();
        for ((node, spec), id) in generated.orderers.iter().zip(specs).zip(ids) {
            let node_id = OrdererConfig::load(&node.config).map_or(id, |c| c.node_id);
            orderers.push(OrdererNode {
                name: node.name.clone(),
                msp_id: node.msp_id.clone(),
                node_id,
                address: format!("{}:{}", spec.host, spec.port),
                cluster_host: spec.host.clone(),
                cluster_port: spec.cluster_port,
                config: node.config.clone(),
            });
        }
        let mut tls_ca_pem = Vec::new();
        for ca in &generated.tls_ca_certs {
            tls_ca_pem.extend(read(ca)?);
            tls_ca_pem.push(b'\n');
        }
        Ok(Network {
            generated,
            orderers,
            tls_ca_pem,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.generated.dir
    }

    /// The orderer called `name`; the error lists the names the network has.
    pub fn orderer(&self, name: &str) -> Result<&OrdererNode, AdminClientError> {
        self.orderers
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| AdminClientError::UnknownNode {
                name: name.to_owned(),
                dir: self.dir().display().to_string(),
                known: self.names(),
            })
    }

    /// Every orderer's name, comma separated (for messages).
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.orderers.iter().map(|o| o.name.as_str()).collect();
        names.join(", ")
    }

    /// The name of the orderer with Raft id `id`, or `node <id>` if the material has none.
    pub fn name_of(&self, id: u64) -> String {
        self.orderers
            .iter()
            .find(|o| o.node_id == id)
            .map_or_else(|| format!("node {id}"), |o| o.name.clone())
    }

    /// The `Admin` user of org `msp_id`.
    pub fn admin(&self, msp_id: &str) -> Result<Admin, AdminClientError> {
        let user =
            self.generated
                .user(msp_id, "Admin")
                .ok_or_else(|| AdminClientError::NoAdmin {
                    msp_id: msp_id.to_owned(),
                    dir: self.dir().display().to_string(),
                })?;
        let identity =
            SigningIdentity::from_pem_files(msp_id, &user.cert, &user.key).map_err(|e| {
                AdminClientError::File {
                    path: user.cert.display().to_string(),
                    reason: format!("the {msp_id} Admin's signing identity: {e}"),
                }
            })?;
        Ok(Admin {
            msp_id: msp_id.to_owned(),
            identity,
            tls_cert_pem: read(&user.tls_cert)?,
            tls_key_pem: read(&user.tls_key)?,
        })
    }

    /// The admins of every org in `orgs` that the material holds (config updates are signed by
    /// all of them, which satisfies any `Admins` policy over those orgs).
    pub fn admins_of(&self, orgs: &[String]) -> Result<Vec<Admin>, AdminClientError> {
        let mut admins = Vec::new();
        for msp_id in orgs {
            if self.generated.user(msp_id, "Admin").is_some() {
                admins.push(self.admin(msp_id)?);
            }
        }
        if admins.is_empty() {
            return Err(AdminClientError::NoAdmin {
                msp_id: orgs.join(", "),
                dir: self.dir().display().to_string(),
            });
        }
        Ok(admins)
    }

    /// TLS for calls to `node`: every org's TLS CA as roots, `admin`'s TLS certificate as
    /// the client certificate (mutual TLS), the server verified for the node's host.
    pub fn tls(&self, node: &OrdererNode, admin: &Admin) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.tls_ca_pem.clone()))
            .identity(Identity::from_pem(
                admin.tls_cert_pem.clone(),
                admin.tls_key_pem.clone(),
            ))
            .domain_name(shared_proto::tls::host_of(&node.address).to_owned())
    }

    /// `node`'s consenter entry as its files are now: cluster host and port as advertised,
    /// its TLS certificate (client and server), its signing certificate, its `orderer.toml`
    /// node id.
    pub fn consenter_entry(&self, node: &OrdererNode) -> Result<Consenter, AdminClientError> {
        let config = OrdererConfig::load(&node.config).map_err(|e| AdminClientError::File {
            path: node.config.display().to_string(),
            reason: e.to_string(),
        })?;
        let tls = pem_to_der(&config.tls.cert)?;
        Ok(Consenter {
            id: config.node_id,
            host: node.cluster_host.clone(),
            port: u32::from(node.cluster_port),
            msp_id: config.msp_id.clone(),
            client_tls_cert: tls.clone(),
            server_tls_cert: tls,
            identity: pem_to_der(&config.identity.cert)?,
        })
    }
}
