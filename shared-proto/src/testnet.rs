//! Test fixture shared by the envelope and block tests: a real channel generated once from the
//! sample network spec, with identities of each kind loaded from the generated files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use prost::Message as _;

use crate::channel::Channel;
use crate::material::generate;
use crate::material::Generated;
use crate::material::NetworkSpec;
use crate::msp::CertificateAuthority;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::msp::TlsCertificateAuthority;
use crate::msp::Usage;
use crate::msp::Validity;
use crate::pb::common::Block;

/// The time the material was generated at; certificates are valid for 365 days from it.
pub(crate) const NOW: i64 = 1_790_000_000;
/// A time when every generated member certificate has expired.
pub(crate) const LATER: i64 = NOW + 2 * 365 * 86_400;

const SAMPLE: &str = include_str!("../../deploy/sample-network.toml");

/// The channel `mychannel` of the sample network and some of its members.
#[derive(Debug)]
pub(crate) struct TestNet {
    pub(crate) channel: Channel,
    pub(crate) genesis: Block,
    /// orderer1..3 of OrdererMSP (role orderer).
    pub(crate) orderers: Vec<SigningIdentity>,
    /// Org1MSP User1 (role client).
    pub(crate) client: SigningIdentity,
    /// Org2MSP Admin (role admin).
    pub(crate) admin: SigningIdentity,
    /// The Admin of each org: OrdererMSP, Org1MSP, Org2MSP.
    pub(crate) admins: Vec<SigningIdentity>,
    /// OrdererMSP's TLS CA (issues consenter TLS certificates).
    pub(crate) orderer_tlsca: TlsCertificateAuthority,
    /// Org1MSP peer0 (role peer).
    pub(crate) peer: SigningIdentity,
}

/// The shared network, generated on first use (the temporary directory is removed once the
/// material is loaded).
pub(crate) fn net() -> &'static TestNet {
    static NET: OnceLock<TestNet> = OnceLock::new();
    NET.get_or_init(|| {
        let spec = NetworkSpec::from_toml(SAMPLE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&spec, &dir.path().join("net"), NOW).unwrap();
        let bytes = std::fs::read(&generated.channels[0].1).unwrap();
        let genesis = Block::decode(bytes.as_slice()).unwrap();
        let channel = Channel::from_config_block(&genesis).unwrap();
        let node = |n: &crate::material::NodeMaterial| {
            SigningIdentity::from_pem_files(
                &n.msp_id,
                &n.dir.join("msp/cert.pem"),
                &n.dir.join("msp/key.pem"),
            )
            .unwrap()
        };
        TestNet {
            orderers: generated.orderers.iter().map(node).collect(),
            peer: node(&generated.peers[0]),
            client: user(&generated, "Org1MSP", "User1"),
            admin: user(&generated, "Org2MSP", "Admin"),
            admins: ["OrdererMSP", "Org1MSP", "Org2MSP"]
                .iter()
                .map(|m| user(&generated, m, "Admin"))
                .collect(),
            orderer_tlsca: {
                let d = generated.dir.join("orgs/OrdererMSP/tlsca");
                let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
                TlsCertificateAuthority::from_pem(&read("cert.pem"), &read("key.pem"), "OrdererMSP")
                    .unwrap()
            },
            channel,
            genesis,
        }
    })
}

fn user(generated: &Generated, msp_id: &str, name: &str) -> SigningIdentity {
    let u = generated.user(msp_id, name).unwrap();
    SigningIdentity::from_pem_files(msp_id, &u.cert, &u.key).unwrap()
}

/// A member certificate with `role` from a freshly generated CA that is not the channel's,
/// claiming to belong to `msp_id`.
pub(crate) fn foreign(msp_id: &str, role: Role) -> SigningIdentity {
    let ca = CertificateAuthority::generate("ca.foreign", msp_id, Validity::days_from(NOW, 365))
        .unwrap();
    let cert = ca
        .issue(
            "intruder",
            Usage::Signing(role),
            &[],
            Validity::days_from(NOW, 30),
        )
        .unwrap();
    SigningIdentity::new(msp_id, cert.cert_der, cert.key).unwrap()
}
