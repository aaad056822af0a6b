//! Test material for the checkers: a real network's genesis block and identities (generated
//! once), and real signed chains built with `shared_proto::block`, to doctor in each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update;
use shared_proto::envelope;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::config::ChannelConfig;

use super::ChainView;
use crate::topology::Topology;
use crate::topology::CHANNEL;

/// When the material was generated; certificates are valid for a year from it.
pub const NOW: i64 = 1_790_000_000;

/// A generated 3-orderer, 2-org network and some of its identities.
#[derive(Debug)]
pub struct Net {
    _dir: tempfile::TempDir,
    pub generated: Generated,
    pub genesis: Block,
    /// orderer1..3 (role orderer): block signers.
    pub orderers: Vec<SigningIdentity>,
    /// Org1MSP User1 (role client).
    pub client: SigningIdentity,
    /// The Admin of OrdererMSP, Org1MSP, Org2MSP.
    pub admins: Vec<SigningIdentity>,
}

pub fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        let topology = Topology {
            name: "checks".into(),
            orderers: 3,
            orgs: 2,
            peers_per_org: 1,
            connected_peers_per_org: 1,
            batch_size: 10,
            batch_timeout_ms: 100,
            base_port: 20_000,
        };
        let dir = tempfile::tempdir().unwrap();
        let generated =
            material::generate(&topology.spec().unwrap(), &dir.path().join("net"), NOW).unwrap();
        let genesis =
            Block::decode(std::fs::read(&generated.channels[0].1).unwrap().as_slice()).unwrap();
        let node = |n: &material::NodeMaterial| {
            SigningIdentity::from_pem_files(
                &n.msp_id,
                &n.dir.join("msp/cert.pem"),
                &n.dir.join("msp/key.pem"),
            )
            .unwrap()
        };
        let user = |msp: &str, name: &str| {
            let u = generated.user(msp, name).unwrap();
            SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
        };
        Net {
            orderers: generated.orderers.iter().map(node).collect(),
            client: user("Org1MSP", "User1"),
            admins: ["OrdererMSP", "Org1MSP", "Org2MSP"]
                .iter()
                .map(|m| user(m, "Admin"))
                .collect(),
            genesis,
            generated,
            _dir: dir,
        }
    })
}

/// A signed client envelope (encoded) with a fresh tx id.
pub fn tx() -> (Vec<u8>, String) {
    let env = envelope::create_signed_envelope(
        &net().client,
        HeaderType::Message,
        CHANNEL,
        b"transfer".to_vec(),
        envelope::new_nonce(),
        NOW as u64 * 1000,
    )
    .encode_to_vec();
    let id = peer::commit::tx_id_of(&env).unwrap();
    (env, id)
}

/// Builds a chain as the orderers would: each block links to the last, names the latest config
/// block and is signed by an orderer.
#[derive(Debug, Clone)]
pub struct ChainBuilder {
    pub blocks: Vec<Block>,
    pub tx_ids: Vec<String>,
    /// The config in force at the tip.
    pub config: ChannelConfig,
    last_config: u64,
}

impl ChainBuilder {
    /// A chain holding only the genesis block.
    pub fn new() -> Self {
        ChainBuilder {
            blocks: vec![net().genesis.clone()],
            tx_ids: Vec::new(),
            config: Channel::from_config_block(&net().genesis)
                .unwrap()
                .config()
                .clone(),
            last_config: 0,
        }
    }

    /// Appends a block of `data`, signed by orderer `signer` (0-based).
    pub fn push(&mut self, data: Vec<Vec<u8>>, is_config: bool, signer: usize) -> &mut Self {
        let number = self.blocks.len() as u64;
        if is_config {
            self.last_config = number;
        }
        let b = signed_block(self.blocks.last().unwrap(), data, self.last_config, signer);
        self.blocks.push(b);
        self
    }

    /// Appends a block of `n` fresh transactions; returns their ids.
    pub fn txs(&mut self, n: usize) -> Vec<String> {
        let (data, ids): (Vec<_>, Vec<_>) = (0..n).map(|_| tx()).unzip();
        self.tx_ids.extend(ids.iter().cloned());
        self.push(data, false, 0);
        ids
    }

    /// Appends a config block whose update is `next` (sequence set by the caller), approved
    /// by every org's admin.
    pub fn config_block(&mut self, next: &ChannelConfig) -> &mut Self {
        let admins: Vec<&SigningIdentity> = net().admins.iter().collect();
        let env = config_update::build_update(next, &admins, &net().admins[0], NOW as u64 * 1000);
        self.config = next.clone();
        self.push(vec![env.encode_to_vec()], true, 0)
    }

    /// The next config with consenter `id` removed.
    pub fn without_consenter(&self, id: u64) -> ChannelConfig {
        let mut next = self.config.clone();
        next.sequence += 1;
        next.orderer
            .as_mut()
            .unwrap()
            .consenters
            .retain(|c| c.id != id);
        next
    }
}

/// A block after `previous` holding `data`, signed by orderer `signer`.
pub fn signed_block(
    previous: &Block,
    data: Vec<Vec<u8>>,
    last_config: u64,
    signer: usize,
) -> Block {
    let number = previous.header.as_ref().unwrap().number + 1;
    let prev = block::header_hash(previous).unwrap().to_vec();
    let mut b = block::new_block(number, prev, data, last_config);
    block::sign_block(&mut b, CHANNEL, &net().orderers[signer]);
    b
}

/// The reference valid chain: genesis, two blocks of transactions, a config block removing
/// consenter 3, two more blocks of transactions (height 6).
pub fn valid_chain() -> &'static ChainBuilder {
    static CHAIN: OnceLock<ChainBuilder> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let mut c = ChainBuilder::new();
        c.txs(3);
        c.txs(2);
        let next = c.without_consenter(3);
        c.config_block(&next);
        c.txs(4);
        c.txs(1);
        c
    })
}

/// A member's view of `blocks`.
pub fn view(member: &str, blocks: &[Block]) -> ChainView {
    ChainView {
        member: member.to_owned(),
        blocks: blocks.to_vec(),
    }
}

/// A peer's copy of `blocks`: every transaction annotated with `code`.
pub fn annotated(member: &str, blocks: &[Block], code: u8) -> ChainView {
    let mut v = view(member, blocks);
    for b in &mut v.blocks {
        let n = block::tx_envelopes(b).len();
        block::set_validation_codes(b, &vec![code; n]);
    }
    v
}
