//! Network material: from one spec file, every node's keys, certificates, TLS material and
//! config file, and each channel's genesis block, written into one directory.
//!
//! Used by tests, the dev network, the chaos harness and deployments, so all of them run the
//! same kind of network. Layout (all paths relative to the output directory):
//!
//! ```text
//! network.toml                                   the spec it was generated from
//! orgs/<msp>/ca/{cert,key}.pem                   org CA (signing identities)
//! orgs/<msp>/tlsca/{cert,key}.pem                org TLS CA (ECDSA P-256 unless the spec says ed25519)
//! orgs/<msp>/orderers/<name>/orderer.toml        node config (paths relative to its folder)
//! orgs/<msp>/orderers/<name>/msp/{cert,key}.pem  signing identity (role orderer)
//! orgs/<msp>/orderers/<name>/tls/{cert,key}.pem  TLS server+client certificate
//! orgs/<msp>/peers/<name>/peer.toml, msp/, tls/  likewise (role peer)
//! orgs/<msp>/users/<name>/msp/, tls/             Admin (role admin) and users (role client)
//! channels/<id>/genesis.block                    block 0: the channel config
//! ```
//! CA keys are kept beside their certificates so more members can be issued later
//! ([`add_orderer`], [`add_peer`], [`add_peer_org`], [`add_channel`] extend a network's material
//! without touching what exists); keep the directory private. [`renew_tls`] replaces one
//! node's TLS certificate and key with new ones from its org's TLS CA (rotation).

mod extend;
mod generate;
mod issue;
mod renew;
mod spec;

pub use extend::add_channel;
pub use extend::add_orderer;
pub use extend::add_peer;
pub use extend::add_peer_org;
pub use generate::generate;
pub use generate::Generated;
pub use generate::NodeMaterial;
pub use generate::UserMaterial;
pub use renew::renew_tls;
pub use renew::RenewedTls;
pub use spec::BatchSpec;
pub use spec::ChaincodeSpec;
pub use spec::ChannelPolicySpec;
pub use spec::ChannelSpec;
pub use spec::NetworkSpec;
pub use spec::OrdererOrgSpec;
pub use spec::OrdererSpec;
pub use spec::PeerOrgSpec;
pub use spec::PeerSpec;

/// Why material could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("network spec field `{field}`: {message}")]
    Spec { field: String, message: String },
    #[error("output directory {path} is not empty; choose a new directory or remove it")]
    NotEmpty { path: String },
    #[error("{path} already exists; extending a network never overwrites material (remove it if a failed run left it)")]
    Exists { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Msp(#[from] crate::msp::MspError),
    #[error("generated channel {channel} does not load back: {source}")]
    Channel {
        channel: String,
        #[source]
        source: crate::channel::ChannelError,
    },
    #[error("cannot encode {what}: {message}")]
    Encode { what: String, message: String },
}

#[cfg(test)]
mod extend_tests;
#[cfg(test)]
mod renew_tests;
#[cfg(test)]
mod tests;
