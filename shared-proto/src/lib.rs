//! What orderers, peers and clients must agree on.
//!
//! - [`pb`]: the wire schemas (`proto/*.proto`, compiled by protox at build time).
//! - [`hash`]: the one definition of block header hash, block data hash and tx id.
//! - [`signing`]: what each signature covers, and Ed25519 sign/verify.
//! - [`msp`]: identities: X.509 certificates with Ed25519 keys, org CAs, roles, verification.
//! - [`policy`]: the policy language (`AND('Org1.peer', OutOf(2, ...))`, `MAJORITY Admins`).
//! - [`channel`]: a channel's configuration, decoded and checked once, with MSPs and policies.
//! - [`config_update`]: how a channel's configuration changes (admins' signatures, one
//!   consenter at a time), checked alike by orderers and peers.
//! - [`envelope`]: creating and verifying signed envelopes (payload, headers, tx id, creator).
//! - [`block`]: assembling, signing and verifying blocks (hash chain, orderer signatures).
//! - [`material`]: generation of every node's keys, certificates, configs and genesis blocks.
//! - [`seek`]: how Deliver's `SeekInfo` positions resolve (orderer and peer alike).
//! - [`tls`]: a node's TLS material as tonic server/client configs (rustls, ring, Ed25519).
//! - [`process`]: what both node processes do around their node (logging, stop signal).
//! - [`node_config`]: the orderer and peer config files (TOML + environment overrides).
//! - [`dial`]: connecting to another node: `address_overrides` applied, TLS name kept.
//! - `failpoints` (feature `failpoints`, harness builds only): crash points and injected
//!   write errors at the nodes' durable steps, armed from `FAILPOINTS`.
//!
//! Promises: every rule here is defined once and used by both sides; every decoder returns a
//! typed error on any byte string and never panics.

pub mod block;
pub mod channel;
pub mod config_update;
pub mod dial;
pub mod envelope;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod hash;
pub mod material;
pub mod msp;
pub mod mutants;
pub mod node_config;
pub mod policy;
pub mod process;
pub mod seek;
pub mod signature_batch;
pub mod signing;
pub mod stopping;
pub mod tls;
pub mod tls_server;

#[cfg(test)]
mod test_answer;

/// The system clock in Unix seconds (0 if it is before 1970). Nodes inject it so tests can
/// use another.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Generated protobuf types and gRPC services, one module per proto package.
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    pub mod common {
        tonic::include_proto!("common");
    }
    pub mod msp {
        tonic::include_proto!("msp");
    }
    pub mod tx {
        tonic::include_proto!("tx");
    }
    pub mod config {
        tonic::include_proto!("config");
    }
    pub mod orderer {
        tonic::include_proto!("orderer");
    }
    pub mod peer {
        tonic::include_proto!("peer");
    }
    pub mod chaincode {
        tonic::include_proto!("chaincode");
    }
}
