#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::block;
use shared_proto::pb::tx::TxValidationCode;

use super::*;
use crate::check::fixture::annotated;
use crate::check::fixture::tx;
use crate::check::fixture::valid_chain;
use crate::check::fixture::view;
use crate::report::TxCounts;

const VALID: i32 = TxValidationCode::Valid as i32;

/// A history where every tx of the valid chain was submitted, acked and seen committed.
fn history_of_valid_chain() -> History {
    let h = History::new();
    for (i, id) in valid_chain().tx_ids.iter().enumerate() {
        let t = i as f64;
        h.submitted(id, i % 2, t);
        h.acked(id, "orderer1", t + 0.1);
        h.committed(id, 1, VALID, t + 0.5);
    }
    h
}

fn index() -> ChainIndex {
    let blocks = &valid_chain().blocks;
    ChainIndex::new(
        &[view("orderer1", blocks), view("orderer2", &blocks[..3])],
        &[annotated("Org1MSP/peer0", blocks, 0)],
    )
}

#[test]
fn chain_index_takes_the_longest_orderer_chain_and_the_peers_codes() {
    let i = index();
    assert_eq!((i.reference.as_str(), i.height), ("orderer1", 6));
    assert_eq!(
        i.len(),
        valid_chain().tx_ids.len() + 1,
        "txs and the config update"
    );
    let id = &valid_chain().tx_ids[4];
    assert_eq!(
        i.first(id),
        Some(&TxPlace {
            block: 2,
            index: 1,
            code: Some(VALID)
        })
    );
    assert_eq!(i.extra_copies(), 0);
}

#[test]
fn chain_index_leaves_codes_out_of_blocks_a_forked_peer_holds() {
    let blocks = &valid_chain().blocks;
    let mut forked = blocks.clone();
    forked[1] = crate::check::fixture::signed_block(&forked[0], vec![tx().0], 0, 1);
    let i = ChainIndex::new(
        &[view("orderer1", blocks)],
        &[annotated("Org1MSP/peer0", &forked, 0)],
    );
    assert_eq!(i.first(&valid_chain().tx_ids[0]).unwrap().code, None);
    assert_eq!(i.first(&valid_chain().tx_ids[4]).unwrap().code, Some(VALID));
}

#[test]
fn acked_not_lost_holds_when_every_acked_tx_is_in_the_chain() {
    let check = acked_not_lost(&history_of_valid_chain(), &index());
    assert!(check.passed, "{}", check.detail);
    assert!(
        check.detail.contains("all 10 acked txs"),
        "{}",
        check.detail
    );
}

#[test]
fn acked_not_lost_catches_an_acked_tx_missing_from_the_chain() {
    let h = history_of_valid_chain();
    let (_, lost) = tx();
    h.submitted(&lost, 0, 20.0);
    h.acked(&lost, "orderer2", 20.5);
    // Submitted but never acked, and absent: unknown, not lost.
    let (_, unknown) = tx();
    h.submitted(&unknown, 1, 21.0);
    let check = acked_not_lost(&h, &index());
    assert!(!check.passed);
    assert!(
        check
            .detail
            .starts_with("1 of 11 acked txs are not in orderer1's chain")
            && check
                .detail
                .contains(&format!("{lost} (acked by orderer2 at 20.50s)"))
            && !check.detail.contains(&unknown),
        "{}",
        check.detail
    );
}

#[test]
fn acked_not_lost_catches_a_tx_lost_by_the_reference_orderer_even_if_a_peer_has_it() {
    // The ordered truth is the orderers' chain: a tx only a peer's (forked) copy holds is lost.
    let blocks = &valid_chain().blocks;
    let i = ChainIndex::new(
        &[view("orderer1", &blocks[..5])],
        &[annotated("Org1MSP/peer0", blocks, 0)],
    );
    let check = acked_not_lost(&history_of_valid_chain(), &i);
    assert!(!check.passed);
    assert!(
        check.detail.contains(&valid_chain().tx_ids[9]),
        "{}",
        check.detail
    );
}

#[test]
fn acked_not_lost_lists_only_the_first_few_missing() {
    let h = History::new();
    for k in 0..5 {
        h.acked(&format!("gone{k}"), "orderer1", f64::from(k));
    }
    let check = acked_not_lost(&h, &index());
    assert!(!check.passed);
    assert!(
        check.detail.contains("gone0") && check.detail.contains("and 2 more"),
        "{}",
        check.detail
    );
    assert!(!check.detail.contains("gone4"), "{}", check.detail);
}

#[test]
fn summary_counts_against_the_final_chain_not_the_clients_view() {
    let blocks = &valid_chain().blocks;
    let ids = &valid_chain().tx_ids;
    let mut peer = annotated("Org1MSP/peer0", blocks, 0);
    // The peer found the 2nd tx of block 1 an MVCC conflict.
    let mut codes = block::validation_codes(&peer.blocks[1]).to_vec();
    codes[1] = TxValidationCode::MvccReadConflict as u8;
    block::set_validation_codes(&mut peer.blocks[1], &codes);
    // A duplicate copy of the first tx in a later block.
    let mut dup = valid_chain().clone();
    dup.push(vec![block::tx_envelopes(&blocks[1])[0].clone()], false, 0);
    let i = ChainIndex::new(&[view("orderer1", &dup.blocks)], &[peer]);

    let h = History::new();
    for (k, id) in ids.iter().enumerate() {
        h.submitted(id, 0, k as f64);
    }
    // The client saw the 3rd tx fail (a lost answer), yet it is in the chain: committed.
    h.timed_out(&ids[2], "deadline", 30.0);
    h.acked(&ids[0], "orderer1", 1.0);
    let (_, lost) = tx();
    h.submitted(&lost, 0, 40.0);
    h.acked(&lost, "orderer3", 40.1);
    let (_, refused) = tx();
    h.submitted(&refused, 0, 41.0);
    h.failed(&refused, "endorsement mismatch", 41.2);
    let (_, unknown) = tx();
    h.submitted(&unknown, 0, 42.0);
    h.timed_out(&unknown, "deadline", 50.0);

    assert_eq!(
        h.summary(&i),
        TxCounts {
            submitted: 13,
            acked: 2,
            committed_valid: 9,
            committed_invalid: 1,
            lost_acked: 1,
            duplicates: 1,
            unknown: 1,
        }
    );
}
