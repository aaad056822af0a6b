//! Phase-2 behaviour: duplicate tx ids, MVCC reads, phantoms, the block overlay, determinism
//! and independence from parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::pb::common::Block;
use shared_proto::pb::tx::TxValidationCode as Code;

use super::testkit::*;
use super::validate_block;
use super::ValidatedBlock;

const BLOCK: u64 = 9;

fn run(state: &MemState, blk: &Block) -> ValidatedBlock {
    validate_block(&kit().channel, state, blk, NOW).unwrap()
}

fn codes(state: &MemState, builders: &[&TxBuilder]) -> Vec<Code> {
    let data = builders.iter().map(|b| b.build()).collect();
    run(state, &block(BLOCK, data)).codes
}

fn token(rw: Rw) -> TxBuilder {
    TxBuilder::token(rw.set())
}

#[test]
fn second_reader_writer_of_a_key_in_one_block_conflicts() {
    let state = MemState::default().with("token", "k", v(3, 0));
    let first = token(Rw::new("token").read("k", Some(v(3, 0))).write("k", b"1"));
    let second = token(Rw::new("token").read("k", Some(v(3, 0))).write("k", b"2"));
    let out = run(&state, &block(BLOCK, vec![first.build(), second.build()]));
    assert_eq!(out.codes, vec![Code::Valid, Code::MvccReadConflict]);
    assert_eq!(out.writes.len(), 1);
    assert_eq!(out.writes[0].value.as_deref(), Some(&b"1"[..]));
    assert_eq!(out.writes[0].version, v(BLOCK, 0));
    // Reading the version the first one wrote is current.
    let third = token(Rw::new("token").read("k", Some(v(BLOCK, 0))));
    assert_eq!(
        codes(&state, &[&first, &second, &third]),
        vec![Code::Valid, Code::MvccReadConflict, Code::Valid]
    );
}

#[test]
fn stale_or_wrong_existence_reads_conflict() {
    let state = MemState::default().with("token", "k", v(3, 1));
    let read = |version| token(Rw::new("token").read("k", version).write("w", b"x"));
    assert_eq!(
        codes(&state, &[&read(Some(v(3, 0)))]),
        vec![Code::MvccReadConflict]
    );
    assert_eq!(codes(&state, &[&read(None)]), vec![Code::MvccReadConflict]);
    assert_eq!(codes(&state, &[&read(Some(v(3, 1)))]), vec![Code::Valid]);
    let absent = token(Rw::new("token").read("nokey", None));
    assert_eq!(codes(&state, &[&absent]), vec![Code::Valid]);
    let phantom_version = token(Rw::new("token").read("nokey", Some(v(1, 0))));
    assert_eq!(
        codes(&state, &[&phantom_version]),
        vec![Code::MvccReadConflict]
    );
    // Reads in another namespace are checked against that namespace.
    let other_ns = TxBuilder::token(shared_proto::pb::tx::TxReadWriteSet {
        ns_rwset: vec![Rw::new("kv").read("k", None).set().ns_rwset.remove(0)],
    });
    assert_eq!(codes(&state, &[&other_ns]), vec![Code::Valid]);
}

#[test]
fn a_delete_earlier_in_the_block_is_seen_by_later_reads() {
    let state = MemState::default().with("token", "k", v(3, 0));
    let delete = token(Rw::new("token").read("k", Some(v(3, 0))).delete("k"));
    let stale = token(Rw::new("token").read("k", Some(v(3, 0))));
    let sees_absent = token(Rw::new("token").read("k", None).write("k", b"again"));
    let out = run(
        &state,
        &block(
            BLOCK,
            vec![delete.build(), stale.build(), sees_absent.build()],
        ),
    );
    assert_eq!(
        out.codes,
        vec![Code::Valid, Code::MvccReadConflict, Code::Valid]
    );
    let writes: Vec<_> = out
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.value.clone(), w.version))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("k", None, v(BLOCK, 0)),
            ("k", Some(b"again".to_vec()), v(BLOCK, 2))
        ]
    );
}

#[test]
fn insert_into_a_range_earlier_in_the_block_is_a_phantom() {
    let state = MemState::default().with("token", "a", v(3, 0));
    let ranged = || token(Rw::new("token").range("a", "c", true, &[("a", v(3, 0))]));
    assert_eq!(codes(&state, &[&ranged()]), vec![Code::Valid]);
    let insert_b = token(Rw::new("token").write("b", b"new"));
    assert_eq!(
        codes(&state, &[&insert_b, &ranged()]),
        vec![Code::Valid, Code::PhantomReadConflict]
    );
    // Writes outside the range do not matter; overwriting `a` or deleting it does.
    let insert_c = token(Rw::new("token").write("c", b"out"));
    let update_a = token(Rw::new("token").write("a", b"new"));
    let delete_a = token(Rw::new("token").delete("a"));
    assert_eq!(
        codes(&state, &[&insert_c, &ranged()]),
        vec![Code::Valid, Code::Valid]
    );
    assert_eq!(
        codes(&state, &[&update_a, &ranged()]),
        vec![Code::Valid, Code::PhantomReadConflict]
    );
    assert_eq!(
        codes(&state, &[&delete_a, &ranged()]),
        vec![Code::Valid, Code::PhantomReadConflict]
    );
    // An invalid insert changes nothing.
    let invalid_insert = TxBuilder::new("token", Rw::new("token").write("b", b"x").set());
    assert_eq!(
        codes(&state, &[&invalid_insert, &ranged()]),
        vec![Code::EndorsementPolicyFailure, Code::Valid]
    );
}

#[test]
fn committed_changes_in_a_range_are_phantoms() {
    let ranged = token(Rw::new("token").range("a", "c", true, &[("a", v(3, 0))]));
    let base = MemState::default().with("token", "a", v(3, 0));
    assert_eq!(codes(&base, &[&ranged]), vec![Code::Valid]);
    let appeared = base.clone().with("token", "b", v(4, 0));
    assert_eq!(
        codes(&appeared, &[&ranged]),
        vec![Code::PhantomReadConflict]
    );
    let updated = MemState::default().with("token", "a", v(4, 2));
    assert_eq!(codes(&updated, &[&ranged]), vec![Code::PhantomReadConflict]);
    assert_eq!(
        codes(&MemState::default(), &[&ranged]),
        vec![Code::PhantomReadConflict]
    );
    // Outside the range, or in another namespace: no phantom.
    let outside = base
        .clone()
        .with("token", "c", v(4, 0))
        .with("kv", "b", v(4, 0));
    assert_eq!(codes(&outside, &[&ranged]), vec![Code::Valid]);
    // Unbounded end.
    let open = token(Rw::new("token").range("a", "", true, &[("a", v(3, 0))]));
    assert_eq!(codes(&base, &[&open]), vec![Code::Valid]);
    assert_eq!(codes(&outside, &[&open]), vec![Code::PhantomReadConflict]);
}

#[test]
fn an_unexhausted_range_is_checked_up_to_its_last_key() {
    let state = MemState::default()
        .with("token", "a", v(1, 0))
        .with("token", "b", v(1, 1))
        .with("token", "d", v(1, 2));
    let partial =
        || token(Rw::new("token").range("a", "", false, &[("a", v(1, 0)), ("b", v(1, 1))]));
    assert_eq!(codes(&state, &[&partial()]), vec![Code::Valid]);
    let beyond = token(Rw::new("token").write("c", b"x"));
    assert_eq!(
        codes(&state, &[&beyond, &partial()]),
        vec![Code::Valid, Code::Valid]
    );
    let within = token(Rw::new("token").write("ab", b"x"));
    assert_eq!(
        codes(&state, &[&within, &partial()]),
        vec![Code::Valid, Code::PhantomReadConflict]
    );
    // As exhausted, the same results miss `d`.
    let exhausted = token(Rw::new("token").range("a", "", true, &[("a", v(1, 0)), ("b", v(1, 1))]));
    assert_eq!(
        codes(&state, &[&exhausted]),
        vec![Code::PhantomReadConflict]
    );
}

#[test]
fn range_check_sees_past_keys_deleted_earlier_in_the_block() {
    let mut state = MemState::default();
    for i in 0..10 {
        state.put("token", &format!("k{i:02}"), v(2, i));
    }
    let deleter = {
        let mut rw = Rw::new("token");
        for i in 1..=5 {
            rw = rw.delete(&format!("k{i:02}"));
        }
        token(rw)
    };
    let survivors: Vec<(String, _)> = [0u64, 6, 7, 8, 9]
        .iter()
        .map(|i| (format!("k{i:02}"), v(2, *i)))
        .collect();
    let results: Vec<(&str, _)> = survivors
        .iter()
        .map(|(k, ver)| (k.as_str(), *ver))
        .collect();
    let right = token(Rw::new("token").range("k00", "k99", true, &results));
    let short = token(Rw::new("token").range("k00", "k99", true, &results[..4]));
    assert_eq!(
        codes(&state, &[&deleter, &right, &short]),
        vec![Code::Valid, Code::Valid, Code::PhantomReadConflict]
    );
}

#[test]
fn duplicate_tx_ids_within_the_block_and_ledger() {
    let first = token(Rw::new("token").write("a", b"1"));
    let same_id = first.clone();
    let out = run(
        &MemState::default(),
        &block(BLOCK, vec![first.build(), same_id.build()]),
    );
    assert_eq!(out.codes, vec![Code::Valid, Code::DuplicateTxid]);
    assert_eq!(out.tx_ids, vec![Some(first.tx_id()), Some(first.tx_id())]);
    assert_eq!(out.writes.len(), 1);

    let mut committed = MemState::default();
    committed.txs.insert(first.tx_id());
    assert_eq!(codes(&committed, &[&first]), vec![Code::DuplicateTxid]);

    // An earlier invalid transaction's id counts, and a duplicate's code overrides its own.
    let mut invalid_first = first.clone();
    invalid_first.endorsers.truncate(1);
    assert_eq!(
        codes(&MemState::default(), &[&invalid_first, &first]),
        vec![Code::EndorsementPolicyFailure, Code::DuplicateTxid]
    );
    assert_eq!(
        codes(&MemState::default(), &[&first, &invalid_first]),
        vec![Code::Valid, Code::DuplicateTxid]
    );
    // An envelope that fails verification has no id, so it cannot squat one.
    let mut forged = first.envelope();
    forged.signature[0] ^= 1;
    let out = run(
        &MemState::default(),
        &block(
            BLOCK,
            vec![prost::Message::encode_to_vec(&forged), first.build()],
        ),
    );
    assert_eq!(out.codes, vec![Code::BadCreatorSignature, Code::Valid]);
    assert_eq!(out.tx_ids, vec![None, Some(first.tx_id())]);
}

#[test]
fn invalid_transactions_contribute_no_writes() {
    let state = MemState::default().with("token", "hot", v(1, 0));
    let k = kit();
    let bad_policy = TxBuilder::new("token", Rw::new("token").write("x", b"1").set())
        .endorsed_by(&[&k.org1_peers[0]]);
    let good = token(
        Rw::new("token")
            .read("hot", Some(v(1, 0)))
            .write("y", b"2")
            .write("hot", b"h"),
    );
    let conflict = token(Rw::new("token").read("hot", Some(v(1, 0))).write("z", b"3"));
    let out = run(
        &state,
        &block(
            BLOCK,
            vec![
                bad_policy.build(),
                good.build(),
                conflict.build(),
                vec![0xFF],
            ],
        ),
    );
    assert_eq!(
        out.codes,
        vec![
            Code::EndorsementPolicyFailure,
            Code::Valid,
            Code::MvccReadConflict,
            Code::BadPayload
        ]
    );
    let keys: Vec<_> = out
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.version))
        .collect();
    assert_eq!(keys, vec![("y", v(BLOCK, 1)), ("hot", v(BLOCK, 1))]);
}

/// 200 transactions of every kind, with conflicts between them.
fn mixed_block(state: &mut MemState) -> Vec<Vec<u8>> {
    let k = kit();
    state.put("token", "hot", v(1, 0));
    state.put("token", "r0", v(1, 1));
    let mut data = Vec::new();
    let mut previous: Option<TxBuilder> = None;
    for i in 0..200u64 {
        let b = match i % 9 {
            0 => token(Rw::new("token").write(&format!("u{i}"), b"v")),
            1 => token(
                Rw::new("token")
                    .read("hot", Some(v(1, 0)))
                    .write("hot", b"h"),
            ),
            2 => TxBuilder::new("token", Rw::new("token").write("p", b"v").set())
                .endorsed_by(&[&k.org2_peers[1]]),
            3 => {
                let b = token(Rw::new("token").write(&format!("f{i}"), b"v"));
                let mut tx = b.transaction();
                tx.endorsements[i as usize % 2].signature[9] ^= 4;
                data.push(prost::Message::encode_to_vec(&b.envelope_of(&tx)));
                continue;
            }
            4 => match &previous {
                Some(p) => p.clone(),
                None => continue,
            },
            5 => token(Rw::new("token").range("r", "s", true, &[("r0", v(1, 1))])),
            6 => token(Rw::new("token").write(&format!("r{i}"), b"v")),
            7 => {
                data.push(vec![0xFF; (i % 5) as usize]);
                continue;
            }
            _ => {
                let rw = Rw::new("kv")
                    .read(&format!("u{}", i - 8), None)
                    .write("m", b"v");
                TxBuilder::new("kv", rw.set()).endorsed_by(&[&k.org1_peers[1], &k.org2_peers[0]])
            }
        };
        data.push(b.build());
        previous = Some(b);
    }
    data
}

#[test]
fn parallel_block_gives_the_same_result_as_each_tx_alone_in_order() {
    let mut state = MemState::default();
    let data = mixed_block(&mut state);
    assert_eq!(data.len(), 200);
    let full = run(&state, &block(BLOCK, data.clone()));
    let valid = full.codes.iter().filter(|c| **c == Code::Valid).count();
    assert!(
        valid > 40 && valid < 160,
        "{valid} valid: a mix is expected"
    );
    for code in [
        Code::MvccReadConflict,
        Code::PhantomReadConflict,
        Code::DuplicateTxid,
        Code::EndorsementPolicyFailure,
        Code::BadPayload,
    ] {
        assert!(full.codes.contains(&code), "{code:?} missing");
    }

    // Reference: one transaction per block, committing each (writes and ids) before the next.
    let mut reference = state.clone();
    let mut codes = Vec::new();
    let mut writes = Vec::new();
    let mut tx_ids = Vec::new();
    for (i, item) in data.iter().enumerate() {
        let mut alone = run(&reference, &block(BLOCK, vec![item.clone()]));
        for w in &mut alone.writes {
            w.version = v(BLOCK, i as u64);
        }
        reference.commit(&alone);
        codes.push(alone.codes[0]);
        writes.extend(alone.writes);
        tx_ids.extend(alone.tx_ids);
    }
    assert_eq!(full.codes, codes);
    assert_eq!(full.writes, writes);
    assert_eq!(full.tx_ids, tx_ids);
}

#[test]
fn validation_is_deterministic_and_independent_of_thread_count() {
    let mut state = MemState::default();
    let blk = block(BLOCK, mixed_block(&mut state));
    let first = run(&state, &blk);
    assert_eq!(run(&state, &blk), first);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(
            pool.install(|| run(&state, &blk)),
            first,
            "{threads} threads"
        );
    }
}
