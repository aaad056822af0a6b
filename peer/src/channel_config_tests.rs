//! Config blocks through the committer, on a real ledger: a valid one switches the config for
//! the next block, invalid ones (too few admins, stale sequence, forged envelope) are committed
//! with their code and change nothing, `last_config_index` is checked, and a reopened ledger
//! reads its config back from its latest valid config block.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::OnceLock;

use fjall::Database;
use prost::Message as _;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::config_update::build_update;
use shared_proto::material::generate;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::config::ChaincodeDefinition;
use shared_proto::pb::config::ChannelConfig;
use shared_proto::pb::config::Organization;
use shared_proto::pb::config::Policy;
use shared_proto::pb::tx::TxValidationCode as Code;

use super::ConfigError;
use crate::commit::CommitError;
use crate::commit::Committer;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::validate::testkit::Rw;
use crate::validate::testkit::TxBuilder;
use crate::validate::testkit::CHANNEL;
use crate::validate::testkit::NOW;

/// Org1 and Org2 on `mychannel`; Org3 exists (its CAs are in `widechannel`) but is not on it.
const SPEC: &str = r#"
name = "cfg"
[[orderer_orgs]]
msp_id = "OrdererMSP"
[[orderer_orgs.orderers]]
name = "orderer1"
port = 7050
cluster_port = 7150
ops_port = 8450
[[peer_orgs]]
msp_id = "Org1MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7060
gossip_port = 7160
ops_port = 8460
[[peer_orgs]]
msp_id = "Org2MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7070
gossip_port = 7170
ops_port = 8470
[[peer_orgs]]
msp_id = "Org3MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7080
gossip_port = 7180
ops_port = 8480
[[channels]]
id = "mychannel"
orgs = ["Org1MSP", "Org2MSP"]
[[channels.chaincodes]]
name = "kv"
endorsement_policy = "MAJORITY Endorsement"
[[channels]]
id = "widechannel"
"#;

/// The chaincode the config update defines, endorsed by Org3's peers only.
const NOTES: &str = "notes";

struct Net {
    genesis: Block,
    /// Org3MSP as `widechannel` defines it.
    org3: Organization,
    orderer: SigningIdentity,
    /// Admins of Org1MSP, Org2MSP, Org3MSP.
    admins: [SigningIdentity; 3],
    org1_peer: SigningIdentity,
    org3_peer: SigningIdentity,
    org3_client: SigningIdentity,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(
            &NetworkSpec::from_toml(SPEC).unwrap(),
            &dir.path().join("net"),
            NOW,
        )
        .unwrap();
        let genesis_of = |id: &str| {
            let (_, path) = g.channels.iter().find(|(c, _)| c == id).unwrap();
            Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
        };
        let wide = Channel::from_config_block(&genesis_of("widechannel")).unwrap();
        let user = |msp: &str, name: &str| {
            let u = g.user(msp, name).unwrap();
            SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
        };
        let node = |msp: &str, dir: &std::path::Path| {
            SigningIdentity::from_pem_files(
                msp,
                &dir.join("msp/cert.pem"),
                &dir.join("msp/key.pem"),
            )
            .unwrap()
        };
        let peer = |msp: &str| {
            let p = g.peers.iter().find(|p| p.msp_id == msp).unwrap();
            node(msp, &p.dir)
        };
        Net {
            genesis: genesis_of(CHANNEL),
            org3: wide
                .config()
                .application_orgs
                .iter()
                .find(|o| o.msp_id == "Org3MSP")
                .unwrap()
                .clone(),
            orderer: node("OrdererMSP", &g.orderers[0].dir),
            admins: [
                user("Org1MSP", "Admin"),
                user("Org2MSP", "Admin"),
                user("Org3MSP", "Admin"),
            ],
            org1_peer: peer("Org1MSP"),
            org3_peer: peer("Org3MSP"),
            org3_client: user("Org3MSP", "User1"),
        }
    })
}

/// A peer's ledger in a temporary directory.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Self {
        Store {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Opens the channel as a starting peer does.
    fn open(&self) -> Result<Committer, ConfigError> {
        self.open_with(&net().genesis)
    }

    fn open_with(&self, genesis: &Block) -> Result<Committer, ConfigError> {
        let db = Database::builder(self.dir.path().join("ledger"))
            .open()
            .unwrap();
        let ledger = Ledger::open(&db, CHANNEL).unwrap();
        Committer::open(genesis, ledger, Arc::new(Metrics::default()))
    }
}

/// The next block holding `data`, signed by the orderer, with `last_config_index` as the
/// orderers set it (`lci`: another one).
fn next_block(c: &Committer, data: Vec<Vec<u8>>, lci: Option<u64>) -> Block {
    let number = c.ledger.height();
    let prev = c.ledger.last_block_hash().unwrap().unwrap();
    let mut b = block::new_block(number, prev.to_vec(), data, 0);
    let is_config = super::config_envelope(&b).is_some();
    let lci = lci.unwrap_or_else(|| {
        c.live_config()
            .expected_last_config_index(number, is_config)
    });
    b.metadata.as_mut().unwrap().last_config_index = lci;
    block::sign_block(&mut b, CHANNEL, &net().orderer);
    b
}

/// Commits a block of `data`; returns its codes.
fn commit(c: &Committer, data: Vec<Vec<u8>>) -> Vec<Code> {
    c.process(next_block(c, data, None)).unwrap().codes
}

/// A CONFIG_UPDATE envelope: the config in force with its sequence + 1 and `edit` applied,
/// approved by `admins`.
fn update(
    base: &Channel,
    admins: &[&SigningIdentity],
    edit: impl FnOnce(&mut ChannelConfig),
) -> Vec<u8> {
    let mut next = base.config().clone();
    next.sequence += 1;
    edit(&mut next);
    build_update(&next, admins, admins[0], (NOW as u64) * 1000).encode_to_vec()
}

/// Adds Org3MSP and the chaincode `notes` (endorsed by an Org3 peer).
fn add_org3_and_notes(config: &mut ChannelConfig) {
    config.application_orgs.push(net().org3.clone());
    config.chaincodes.push(ChaincodeDefinition {
        name: NOTES.into(),
        version: "1.0".into(),
        endorsement_policy: Some(Policy {
            rule: "OR('Org3MSP.peer')".into(),
        }),
    });
}

fn org1_and_org2_admins() -> [&'static SigningIdentity; 2] {
    [&net().admins[0], &net().admins[1]]
}

/// A `notes` transaction created by Org3's client and endorsed by Org3's peer.
fn org3_notes_tx() -> Vec<u8> {
    let mut b = TxBuilder::new(NOTES, Rw::new(NOTES).write("k", b"v").set())
        .endorsed_by(&[&net().org3_peer]);
    b.creator = &net().org3_client;
    b.build()
}

#[test]
fn config_block_adding_an_org_and_a_chaincode_is_valid_and_governs_the_next_block() {
    let store = Store::new();
    let c = store.open().unwrap();
    assert_eq!(c.config().sequence(), 0);
    // Before: Org3's client is nobody on the channel, `notes` is not defined.
    let mut by_org1 = TxBuilder::new(NOTES, Rw::new(NOTES).write("k", b"v").set())
        .endorsed_by(&[&net().org3_peer]);
    by_org1.creator = &net().org1_peer;
    assert_eq!(
        commit(&c, vec![org3_notes_tx(), by_org1.build()]),
        vec![Code::BadCreatorSignature, Code::InvalidChaincode]
    );

    let changes = c.live_config().subscribe();
    let config = update(&c.config(), &org1_and_org2_admins(), add_org3_and_notes);
    assert_eq!(commit(&c, vec![config]), vec![Code::Valid]);
    assert!(changes.has_changed().unwrap(), "subscribers are told");
    let now = c.config();
    assert_eq!(now.sequence(), 1);
    assert!(now.application_orgs().contains(&"Org3MSP".to_owned()));
    assert_eq!(c.live_config().in_force_block(), 2);

    // The very next block is validated under the new config: new MSP, new chaincode, its
    // policy (an Org1 peer's endorsement does not satisfy it).
    let mut wrong_org = TxBuilder::new(NOTES, Rw::new(NOTES).write("k2", b"v").set())
        .endorsed_by(&[&net().org1_peer]);
    wrong_org.creator = &net().org3_client;
    assert_eq!(
        commit(&c, vec![org3_notes_tx(), wrong_org.build()]),
        vec![Code::Valid, Code::EndorsementPolicyFailure]
    );
    assert_eq!(c.ledger.height(), 4);
}

#[test]
fn config_block_signed_by_too_few_admins_is_invalid_and_changes_nothing() {
    let store = Store::new();
    let c = store.open().unwrap();
    // MAJORITY Admins of Org1, Org2 and OrdererMSP needs two.
    let config = update(&c.config(), &[&net().admins[0]], add_org3_and_notes);
    let committed = c.process(next_block(&c, vec![config], None)).unwrap();
    assert_eq!(committed.codes, vec![Code::InvalidConfigTransaction]);
    assert_eq!(
        c.ledger.height(),
        2,
        "the invalid config block is in the chain"
    );
    let stored = c.ledger.block(1).unwrap().unwrap();
    assert_eq!(
        block::validation_codes(&stored),
        &[Code::InvalidConfigTransaction as u8]
    );
    assert_eq!(c.config().sequence(), 0);
    assert_eq!(c.live_config().in_force_block(), 0);
    assert_eq!(
        commit(&c, vec![org3_notes_tx()]),
        vec![Code::BadCreatorSignature]
    );
}

#[test]
fn stale_sequence_config_block_is_invalid_and_changes_nothing() {
    let store = Store::new();
    let c = store.open().unwrap();
    let genesis = c.config();
    // Two updates built on sequence 0: the first ordered wins, the second is stale.
    let first = update(&genesis, &org1_and_org2_admins(), add_org3_and_notes);
    let second = update(&genesis, &org1_and_org2_admins(), |cfg| {
        cfg.orderer.as_mut().unwrap().batch_timeout_ms = 777;
    });
    assert_eq!(commit(&c, vec![first]), vec![Code::Valid]);
    assert_eq!(
        commit(&c, vec![second]),
        vec![Code::InvalidConfigTransaction]
    );
    assert_eq!(c.config().sequence(), 1);
    assert_ne!(c.config().batch_timeout_ms(), 777);
    assert_eq!(c.live_config().in_force_block(), 1);
}

#[test]
fn config_envelope_with_a_forged_creator_signature_is_refused_with_its_code() {
    let store = Store::new();
    let c = store.open().unwrap();
    let bytes = update(&c.config(), &org1_and_org2_admins(), add_org3_and_notes);
    let mut envelope = Envelope::decode(bytes.as_slice()).unwrap();
    envelope.signature[0] ^= 1;
    let codes = commit(&c, vec![envelope.encode_to_vec()]);
    assert_eq!(codes, vec![Code::BadCreatorSignature]);
    assert_eq!(c.config().sequence(), 0);
}

#[test]
fn config_update_among_other_envelopes_is_not_a_config_block() {
    let store = Store::new();
    let c = store.open().unwrap();
    let config = update(&c.config(), &org1_and_org2_admins(), add_org3_and_notes);
    let codes = commit(&c, vec![config, org3_notes_tx()]);
    assert_eq!(
        codes,
        vec![Code::InvalidConfigTransaction, Code::BadCreatorSignature]
    );
    assert_eq!(c.config().sequence(), 0);
}

#[test]
fn block_naming_another_config_block_is_refused_and_not_committed() {
    let store = Store::new();
    let c = store.open().unwrap();
    let config = update(&c.config(), &org1_and_org2_admins(), add_org3_and_notes);
    // A config block must name itself.
    let err = c
        .process(next_block(&c, vec![config.clone()], Some(0)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::LastConfigIndex {
                number: 1,
                found: 0,
                expected: 1
            }
        ),
        "{err}"
    );
    assert!(err.is_refusal());
    assert_eq!(commit(&c, vec![config]), vec![Code::Valid]);
    // Every later block names it.
    let err = c
        .process(next_block(&c, vec![org3_notes_tx()], Some(0)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::LastConfigIndex {
                number: 2,
                found: 0,
                expected: 1
            }
        ),
        "{err}"
    );
    assert_eq!(c.ledger.height(), 2);
}

#[test]
fn reopened_ledger_reads_its_config_from_the_latest_valid_config_block() {
    let store = Store::new();
    {
        let c = store.open().unwrap();
        let valid = update(&c.config(), &org1_and_org2_admins(), add_org3_and_notes);
        assert_eq!(commit(&c, vec![valid]), vec![Code::Valid]);
        // Now four orgs: MAJORITY Admins needs three; two is too few. The orderers still
        // count it as the chain's latest config block.
        let too_few = update(&c.config(), &org1_and_org2_admins(), |cfg| {
            cfg.orderer.as_mut().unwrap().batch_timeout_ms = 777;
        });
        assert_eq!(
            commit(&c, vec![too_few]),
            vec![Code::InvalidConfigTransaction]
        );
        assert_eq!(commit(&c, vec![org3_notes_tx()]), vec![Code::Valid]);
        c.ledger.sync().unwrap();
    }
    let c = store.open().unwrap();
    assert_eq!(c.ledger.height(), 4);
    assert_eq!(c.config().sequence(), 1, "the config of block 1");
    assert_eq!(c.live_config().in_force_block(), 1);
    assert_ne!(c.config().batch_timeout_ms(), 777);
    assert_eq!(c.live_config().expected_last_config_index(4, false), 2);
    assert_eq!(commit(&c, vec![org3_notes_tx()]), vec![Code::Valid]);
    let three = [&net().admins[0], &net().admins[1], &net().admins[2]];
    let again = update(&c.config(), &three, |cfg| {
        cfg.orderer.as_mut().unwrap().batch_timeout_ms = 777;
    });
    assert_eq!(commit(&c, vec![again]), vec![Code::Valid]);
    drop(c);
    let c = store.open().unwrap();
    assert_eq!(c.config().sequence(), 2);
    assert_eq!(c.config().batch_timeout_ms(), 777);
    assert_eq!(c.live_config().in_force_block(), 5);
}

#[test]
fn data_dir_of_another_genesis_block_is_refused_at_open() {
    let store = Store::new();
    drop(store.open().unwrap());
    let config = Channel::from_config_block(&net().genesis)
        .unwrap()
        .config()
        .clone();
    let other = shared_proto::channel::genesis_block(
        &config,
        &net().admins[0],
        b"another-genesis-nonce-0123456789",
        (NOW as u64) * 1000,
    );
    let err = store.open_with(&other).unwrap_err();
    assert!(matches!(err, ConfigError::GenesisMismatch { .. }), "{err}");
}

// Pipelined runs (`commit::pipeline`): blocks built ahead, committed as one run.

/// The block after `prev` holding `data`, signed by the orderer, naming `lci` as the chain's
/// latest config block.
fn chained(prev: &Block, data: Vec<Vec<u8>>, lci: u64) -> Block {
    let number = prev.header.as_ref().unwrap().number + 1;
    let prev_hash = block::header_hash(prev).unwrap();
    let mut b = block::new_block(number, prev_hash.to_vec(), data, 0);
    b.metadata.as_mut().unwrap().last_config_index = lci;
    block::sign_block(&mut b, CHANNEL, &net().orderer);
    b
}

/// A `notes` transaction with `rw`, created by Org3's client and endorsed by Org3's peer.
fn notes_tx(rw: Rw) -> TxBuilder {
    let mut b = TxBuilder::new(NOTES, rw.set()).endorsed_by(&[&net().org3_peer]);
    b.creator = &net().org3_client;
    b
}

fn run_codes(outcome: crate::commit::RunOutcome) -> Vec<Vec<Code>> {
    assert!(outcome.leftover.is_empty());
    outcome
        .results
        .into_iter()
        .map(|r| r.unwrap().codes)
        .collect()
}

#[test]
fn pipelined_run_across_a_config_block_sees_each_blocks_commit_and_matches_one_by_one() {
    use crate::validate::testkit::v;
    let (pipelined, serial) = (Store::new(), Store::new());
    let (p, s) = (pipelined.open().unwrap(), serial.open().unwrap());
    let genesis = &net().genesis;
    let config = update(&p.config(), &org1_and_org2_admins(), add_org3_and_notes);
    let first = notes_tx(Rw::new(NOTES).read("k", None).write("k", b"1"));
    let b1 = chained(genesis, vec![org3_notes_tx()], 0);
    let b2 = chained(&b1, vec![config], 2);
    // Only valid under the config block 2 puts in force.
    let b3 = chained(&b2, vec![first.build()], 2);
    let b4 = chained(
        &b3,
        vec![
            // Read "k" as absent, but block 3 wrote it: the MVCC check must see block 3.
            notes_tx(Rw::new(NOTES).read("k", None).write("k", b"2")).build(),
            // Block 3's transaction again: its tx id is committed.
            first.build(),
            notes_tx(Rw::new(NOTES).read("k", Some(v(3, 0))).write("k", b"3")).build(),
        ],
        2,
    );
    let b5 = chained(
        &b4,
        vec![notes_tx(Rw::new(NOTES).read("k", Some(v(4, 2))).write("k", b"4")).build()],
        2,
    );
    let blocks = vec![b1, b2, b3, b4, b5];
    let want = vec![
        vec![Code::BadCreatorSignature],
        vec![Code::Valid],
        vec![Code::Valid],
        vec![Code::MvccReadConflict, Code::DuplicateTxid, Code::Valid],
        vec![Code::Valid],
    ];
    assert_eq!(run_codes(p.process_run(blocks.clone())), want);
    let one_by_one: Vec<Vec<Code>> = blocks
        .into_iter()
        .map(|b| s.process(b).unwrap().codes)
        .collect();
    assert_eq!(one_by_one, want);
    assert_eq!(p.ledger.height(), 6);
    assert_eq!(p.config().sequence(), 1);
    for n in 0..6 {
        assert_eq!(p.ledger.block(n).unwrap(), s.ledger.block(n).unwrap());
    }
}

#[test]
fn pipelined_run_stops_at_a_refused_block_and_hands_back_the_rest() {
    let store = Store::new();
    let c = store.open().unwrap();
    let b1 = chained(&net().genesis, vec![org3_notes_tx()], 0);
    let mut b2 = chained(&b1, vec![org3_notes_tx()], 0);
    // Tampered after signing: the data hash no longer matches.
    b2.data.as_mut().unwrap().data.push(org3_notes_tx());
    let b3 = chained(&b2, vec![org3_notes_tx()], 0);
    let outcome = c.process_run(vec![b1, b2, b3.clone()]);
    assert_eq!(outcome.results.len(), 2);
    assert!(outcome.results[0].is_ok());
    assert!(matches!(&outcome.results[1], Err(e) if e.is_refusal()));
    assert_eq!(outcome.leftover, vec![b3]);
    assert_eq!(c.ledger.height(), 2, "nothing after the refused block");
}

#[test]
fn pipelined_run_skips_a_block_already_committed() {
    let store = Store::new();
    let c = store.open().unwrap();
    let b1 = chained(&net().genesis, vec![org3_notes_tx()], 0);
    let b2 = chained(&b1, vec![org3_notes_tx()], 0);
    c.process(b1.clone()).unwrap();
    let outcome = c.process_run(vec![b1, b2]);
    assert!(matches!(
        outcome.results[0],
        Err(CommitError::AlreadyCommitted { number: 1 })
    ));
    assert_eq!(outcome.results[1].as_ref().unwrap().number, 2);
    assert_eq!(c.ledger.height(), 3);
}
