#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::pb::tx::TxValidationCode;

use super::*;
use crate::check::fixture::annotated;
use crate::check::fixture::net;
use crate::check::fixture::valid_chain;
use crate::check::verify_chain;

const STATE: &str = "6a09e667f3bcc908b2fb1366ea957d3e3a0fd8a3c1f5b4e7a2c9d0e1f2a3b4c5";
const OTHER_STATE: &str = "bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1510e527fade682d1";

fn peers() -> Vec<PeerStateView> {
    let blocks = &valid_chain().blocks;
    vec![
        PeerStateView::from_chain(&annotated("Org1MSP/peer0", blocks, 0), STATE),
        PeerStateView::from_chain(&annotated("Org2MSP/peer0", blocks, 0), STATE),
        PeerStateView::from_chain(&annotated("Org1MSP/peer1", &blocks[..4], 0), OTHER_STATE),
    ]
}

#[test]
fn peer_state_view_holds_the_codes_of_each_block() {
    let p = &peers()[0];
    assert_eq!(p.height, 6);
    assert_eq!(p.codes[1], vec![0, 0, 0]);
    assert_eq!(p.codes[3], vec![0]);
}

#[test]
fn peers_agree_holds_for_peers_with_the_same_codes_and_state_at_each_height() {
    let check = peers_agree(&peers());
    assert!(check.passed, "{}", check.detail);
    assert!(
        check.detail.contains("1 state hash comparisons"),
        "{}",
        check.detail
    );
}

#[test]
fn peers_agree_catches_diverging_validation_codes() {
    let mut p = peers();
    // peer1 (behind at height 4) found a tx of block 2 invalid where the others found it valid.
    p[2].codes[2][1] = TxValidationCode::MvccReadConflict as i32;
    let check = peers_agree(&p);
    assert!(!check.passed);
    assert_eq!(
        check.detail,
        "block 2: Org1MSP/peer0 recorded codes [0,0], Org1MSP/peer1 recorded [0,11]"
    );
}

#[test]
fn peers_agree_catches_a_peer_that_recorded_fewer_codes() {
    let mut p = peers();
    p[1].codes[4].pop();
    let check = peers_agree(&p);
    assert!(!check.passed);
    assert!(check.detail.starts_with("block 4:"), "{}", check.detail);
}

#[test]
fn peers_agree_catches_diverging_state_at_the_same_height() {
    let mut p = peers();
    p[1].state_hash = OTHER_STATE.into();
    let check = peers_agree(&p);
    assert!(!check.passed);
    assert_eq!(
        check.detail,
        "height 6: Org1MSP/peer0 has state hash \"6a09e667f3bc\", Org2MSP/peer0 has \"bb67ae8584ca\""
    );
}

#[test]
fn peers_agree_catches_a_peer_that_reported_no_state_hash() {
    let mut p = peers();
    p[0].state_hash.clear();
    p[1].state_hash.clear();
    assert!(!peers_agree(&p).passed);
}

#[test]
fn peers_agree_with_no_peer_fails() {
    assert!(!peers_agree(&[]).passed);
}

fn configs() -> Vec<ConfigView> {
    let v = verify_chain(&annotated("orderer1", &valid_chain().blocks, 0)).unwrap();
    ["orderer1", "orderer2"]
        .iter()
        .map(|m| ConfigView {
            member: (*m).into(),
            sequence: v.config.sequence(),
            consenters: consenter_names(&v.config),
        })
        .collect()
}

#[test]
fn consenter_names_name_each_consenter_by_id_org_and_address() {
    let c = &configs()[0];
    assert_eq!(c.sequence, 1);
    assert_eq!(c.consenters.len(), 2);
    let first = &c.consenters[0];
    assert!(first.starts_with("1:OrdererMSP@"), "{first}");
    assert!(net().generated.orderers.len() == 3);
}

#[test]
fn config_agree_holds_when_every_node_has_the_same_config() {
    let check = config_agree(&configs());
    assert!(check.passed, "{}", check.detail);
    assert_eq!(check.detail, "2 nodes at sequence 1 with 2 consenters");
}

#[test]
fn config_agree_catches_a_diverging_sequence() {
    let mut c = configs();
    c[1].sequence = 0;
    let check = config_agree(&c);
    assert!(!check.passed);
    assert!(
        check.detail.starts_with("orderer2 is at sequence 0")
            && check.detail.contains("orderer1 is at sequence 1"),
        "{}",
        check.detail
    );
}

#[test]
fn config_agree_catches_diverging_consenters_at_the_same_sequence() {
    let mut c = configs();
    c[1].consenters.pop();
    let check = config_agree(&c);
    assert!(!check.passed);
    assert!(
        check.detail.starts_with("orderer2 is at sequence 1"),
        "{}",
        check.detail
    );
}

#[test]
fn config_agree_with_no_config_fails() {
    assert!(!config_agree(&[]).passed);
}

#[test]
fn live_after_heal_holds_when_a_commit_follows_the_heal_within_the_bound() {
    let commits = [(3.0, 0.2), (10.0, 0.3), (12.5, 2.0), (11.2, 1.0)];
    let l = live_after_heal(10.5, &commits, 5.0, 30.0);
    assert!(l.check.passed, "{}", l.check.detail);
    assert!((l.seconds - 0.7).abs() < 1e-9, "{}", l.seconds);
}

#[test]
fn live_after_heal_catches_a_first_commit_beyond_the_bound() {
    let l = live_after_heal(10.0, &[(5.0, 0.1), (25.0, 1.0)], 5.0, 30.0);
    assert!(!l.check.passed);
    assert_eq!(l.seconds, 15.0);
    assert!(
        l.check.detail.contains("beyond the bound"),
        "{}",
        l.check.detail
    );
}

#[test]
fn live_after_heal_catches_no_commit_after_the_heal_and_reports_the_time_waited() {
    let l = live_after_heal(10.0, &[(5.0, 0.1), (f64::NAN, 1.0)], 5.0, 40.0);
    assert!(!l.check.passed);
    assert_eq!(l.seconds, 30.0);
    assert!(
        l.check.detail.starts_with("no commit"),
        "{}",
        l.check.detail
    );
}
