#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::block;

use super::*;
use crate::check::fixture::annotated;
use crate::check::fixture::net;
use crate::check::fixture::signed_block;
use crate::check::fixture::tx;
use crate::check::fixture::valid_chain;
use crate::check::fixture::view;
use crate::check::fixture::ChainBuilder;

fn members(blocks: &[shared_proto::pb::common::Block]) -> Vec<ChainView> {
    vec![
        view("orderer1", blocks),
        view("orderer2", blocks),
        annotated("Org1MSP/peer0", blocks, 0),
        annotated("Org2MSP/peer0", blocks, 0),
    ]
}

/// The valid chain with its tip replaced by another block at the same height, validly signed
/// by another orderer, holding other transactions.
fn forked_tip() -> Vec<shared_proto::pb::common::Block> {
    let c = valid_chain();
    let mut blocks = c.blocks.clone();
    let tip = blocks.pop().unwrap();
    let other = signed_block(
        blocks.last().unwrap(),
        vec![tx().0],
        block::last_config_index(&tip),
        1,
    );
    blocks.push(other);
    blocks
}

#[test]
fn no_fork_holds_on_one_real_chain_held_by_orderers_and_peers() {
    let check = no_fork(&members(&valid_chain().blocks), &Lag::Fails);
    assert!(check.passed, "{}", check.detail);
    assert_eq!(check.name, "no_fork");
    assert!(check.detail.contains("up to height 6"), "{}", check.detail);
}

#[test]
fn no_fork_catches_two_hashes_at_one_height() {
    let mut chains = members(&valid_chain().blocks);
    chains[1] = view("orderer2", &forked_tip());
    // Both chains are valid on their own: only the comparison can see the fork.
    assert!(chain_valid(&chains).passed);
    let check = no_fork(&chains, &Lag::Fails);
    assert!(!check.passed);
    assert!(
        check.detail.contains("fork at height 5") && check.detail.contains("orderer2"),
        "{}",
        check.detail
    );
}

#[test]
fn no_fork_catches_a_peer_that_committed_another_block() {
    let mut chains = members(&valid_chain().blocks);
    chains[3] = annotated("Org2MSP/peer0", &forked_tip(), 0);
    let check = no_fork(&chains, &Lag::Allowed);
    assert!(!check.passed);
    assert!(check.detail.contains("Org2MSP/peer0"), "{}", check.detail);
}

#[test]
fn no_fork_catches_a_member_left_behind_unless_lag_is_allowed() {
    let blocks = &valid_chain().blocks;
    let mut chains = members(blocks);
    chains[1] = view("orderer2", &blocks[..4]);
    let check = no_fork(&chains, &Lag::Fails);
    assert!(!check.passed);
    assert!(
        check.detail.contains("orderer2 stops at height 4")
            && check.detail.contains("orderer1 has height 6"),
        "{}",
        check.detail
    );
    assert!(no_fork(&chains, &Lag::Allowed).passed);
    assert!(no_fork(&chains, &Lag::AllowedFor(vec!["orderer2".into()])).passed);
    assert!(!no_fork(&chains, &Lag::AllowedFor(vec!["orderer3".into()])).passed);
}

#[test]
fn no_fork_with_nothing_collected_fails() {
    assert!(!no_fork::<ChainView>(&[], &Lag::Allowed).passed);
}

#[test]
fn chain_valid_holds_on_a_real_chain_across_a_config_block() {
    let chains = members(&valid_chain().blocks);
    let check = chain_valid(&chains);
    assert!(check.passed, "{}", check.detail);
    let v = verify_chain(&chains[0]).unwrap();
    assert_eq!(v.hashes.len(), 6);
    assert_eq!(v.last_config_block, 3);
    assert_eq!(v.config.sequence(), 1);
    assert_eq!(v.config.consenters().len(), 2);
}

fn fault(blocks: Vec<shared_proto::pb::common::Block>) -> (Check, ChainFault) {
    let chains = vec![
        view("orderer1", &valid_chain().blocks),
        view("orderer2", &blocks),
    ];
    (chain_valid(&chains), verify_chain(&chains[1]).unwrap_err())
}

#[test]
fn chain_valid_catches_a_broken_previous_hash() {
    let mut blocks = valid_chain().blocks.clone();
    blocks[4].header.as_mut().unwrap().previous_hash[0] ^= 1;
    let (check, f) = fault(blocks);
    assert!(!check.passed);
    assert_eq!((f.member.as_str(), f.number), ("orderer2", 4));
    assert!(check.detail.contains("previous hash"), "{}", check.detail);
}

#[test]
fn chain_valid_catches_a_tampered_data_hash() {
    let mut blocks = valid_chain().blocks.clone();
    blocks[2].data.as_mut().unwrap().data[0][5] ^= 1;
    let (check, f) = fault(blocks);
    assert!(!check.passed);
    assert_eq!(f.number, 2);
    assert!(check.detail.contains("data hash"), "{}", check.detail);
}

#[test]
fn chain_valid_catches_a_bad_orderer_signature() {
    let mut blocks = valid_chain().blocks.clone();
    blocks[5].metadata.as_mut().unwrap().signatures[0].signature[0] ^= 1;
    let (check, f) = fault(blocks);
    assert!(!check.passed);
    assert_eq!(f.number, 5);
    assert!(check.detail.contains("signature"), "{}", check.detail);
}

#[test]
fn chain_valid_catches_a_block_signed_by_a_client_not_an_orderer() {
    let mut blocks = valid_chain().blocks.clone();
    let b = &mut blocks[1];
    b.metadata.as_mut().unwrap().signatures.clear();
    block::sign_block(b, crate::topology::CHANNEL, &net().client);
    let (check, f) = fault(blocks);
    assert!(!check.passed);
    assert_eq!(f.number, 1);
    assert!(check.detail.contains("BlockValidation"), "{}", check.detail);
}

#[test]
fn chain_valid_catches_an_unsigned_block() {
    let mut blocks = valid_chain().blocks.clone();
    blocks[3].metadata.as_mut().unwrap().signatures.clear();
    let (_, f) = fault(blocks);
    assert_eq!(f.number, 3);
    assert!(f.reason.contains("no signatures"), "{}", f.reason);
}

#[test]
fn chain_valid_catches_a_gap_in_the_numbering() {
    let mut blocks = valid_chain().blocks.clone();
    blocks.remove(2);
    let (check, f) = fault(blocks);
    assert!(!check.passed);
    assert_eq!(f.number, 2);
    assert!(
        f.reason.contains("expected block 2, got block 3"),
        "{}",
        f.reason
    );
}

#[test]
fn chain_valid_catches_a_block_that_names_the_wrong_config_block() {
    let c = valid_chain();
    let mut blocks = c.blocks[..5].to_vec();
    // Block 5 comes after the config block 3 but names the genesis block.
    blocks.push(signed_block(&blocks[4], vec![tx().0], 0, 0));
    let (_, f) = fault(blocks);
    assert_eq!(f.number, 5);
    assert!(
        f.reason.contains("latest config block is 3"),
        "{}",
        f.reason
    );
}

#[test]
fn chain_valid_catches_a_config_block_that_does_not_follow_the_config_in_force() {
    // A second update built on sequence 0 again, after block 3 moved the channel to 1: the
    // verifier must have followed block 3 to refuse it.
    let mut c = valid_chain().clone();
    let stale = ChainBuilder::new().without_consenter(2);
    c.config_block(&stale);
    let (check, f) = fault(c.blocks);
    assert!(!check.passed);
    assert_eq!(f.number, 6);
    assert!(f.reason.contains("sequence 1"), "{}", f.reason);
}

#[test]
fn chain_valid_catches_a_block_signed_under_the_rule_a_config_block_replaced() {
    // Block 2 (config) makes BlockValidation require two distinct orderers. Block 3 carries
    // two signatures, block 4 only one: valid under the genesis rule, not under the rule in
    // force, so only a verifier that follows block 2 refuses it.
    let mut c = ChainBuilder::new();
    c.txs(1);
    let mut next = c.config.clone();
    next.sequence += 1;
    let rule = next
        .policies
        .iter_mut()
        .find(|p| p.name == shared_proto::channel::BLOCK_VALIDATION)
        .and_then(|p| p.policy.as_mut())
        .unwrap();
    rule.rule = "OutOf(2, 'OrdererMSP.orderer', 'OrdererMSP.orderer')".into();
    c.config_block(&next);
    let mut two = signed_block(c.blocks.last().unwrap(), vec![tx().0], 2, 0);
    block::sign_block(&mut two, crate::topology::CHANNEL, &net().orderers[1]);
    c.blocks.push(two);
    let holds = chain_valid(&[view("orderer1", &c.blocks)]);
    assert!(holds.passed, "{}", holds.detail);

    c.push(vec![tx().0], false, 0);
    let genesis_rule = shared_proto::channel::Channel::from_config_block(&net().genesis).unwrap();
    let one = block::verify_block(
        &genesis_rule,
        &c.blocks[4],
        block::Expected::after(3, block::header_hash(&c.blocks[3]).unwrap()),
        shared_proto::msp::ANY_TIME,
    );
    assert!(
        one.is_ok(),
        "block 4 is valid under the genesis rule: {one:?}"
    );
    let check = chain_valid(&[view("orderer1", &c.blocks)]);
    assert!(!check.passed);
    assert!(
        check.detail.contains("orderer1: block 4") && check.detail.contains("BlockValidation"),
        "{}",
        check.detail
    );
}

#[test]
fn chain_valid_catches_a_peer_copy_with_codes_missing() {
    let mut peer = annotated("Org1MSP/peer0", &valid_chain().blocks, 0);
    block::set_validation_codes(&mut peer.blocks[1], &[0]);
    let check = chain_valid(&[peer]);
    assert!(!check.passed);
    assert!(
        check
            .detail
            .contains("block 1: 1 validation codes for 3 transactions"),
        "{}",
        check.detail
    );
}

#[test]
fn chain_valid_catches_a_forged_genesis_block() {
    let mut blocks = valid_chain().blocks.clone();
    blocks[0].header.as_mut().unwrap().data_hash[0] ^= 1;
    let (_, f) = fault(blocks);
    assert_eq!(f.number, 0);
}

#[test]
fn chain_valid_catches_an_empty_chain() {
    let (check, f) = fault(Vec::new());
    assert!(!check.passed);
    assert!(f.reason.contains("no block"), "{}", f.reason);
}

#[test]
fn no_duplicates_holds_on_a_real_chain() {
    let check = no_duplicates(&members(&valid_chain().blocks));
    assert!(check.passed, "{}", check.detail);
}

#[test]
fn no_duplicates_catches_a_tx_id_in_two_blocks() {
    let c = valid_chain();
    let again = block::tx_envelopes(&c.blocks[2])[1].clone();
    let mut dup = c.clone();
    dup.push(vec![again], false, 0);
    let mut chains = members(&c.blocks);
    chains.push(view("orderer3", &dup.blocks));
    // A valid chain on its own: signatures and links are fine, only the tx id repeats.
    assert!(chain_valid(&chains).passed);
    let check = no_duplicates(&chains);
    assert!(!check.passed);
    let id = &c.tx_ids[4];
    assert!(
        check.detail.contains(&format!(
            "orderer3: tx {id} is in block 2 and again in block 6"
        )),
        "{}",
        check.detail
    );
}

#[test]
fn no_duplicates_catches_a_tx_id_twice_in_one_block() {
    let (env, id) = tx();
    let mut c = ChainBuilder::new();
    c.push(vec![env.clone(), env], false, 0);
    let check = no_duplicates(&[view("orderer1", &c.blocks)]);
    assert!(!check.passed);
    assert!(check.detail.contains(&id), "{}", check.detail);
}
