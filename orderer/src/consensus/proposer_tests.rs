//! The proposer against a scripted Raft: in-flight slots, a full queue, leadership loss, the
//! proposal deadline, per-position answers, and what it tells the batch timer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::super::scripted_raft::Script;
use super::super::scripted_raft::ScriptedRaft;
use super::super::test_material;
use super::super::Response;
use super::*;

fn clients() -> (tempfile::TempDir, ClusterClients) {
    let (dir, generated) = test_material::generate();
    let config =
        shared_proto::node_config::OrdererConfig::load(&generated.orderers[0].config).unwrap();
    let tls = shared_proto::tls::TlsMaterial::load(&config.tls).unwrap();
    let dialer = shared_proto::dial::Dialer::direct(Arc::new(tls));
    (dir, ClusterClients::new(Arc::new(dialer)))
}

/// An envelope large enough to fill an entry on its own (3 MiB + 3 MiB > BATCH_BYTES_MAX).
fn entry_sized(k: u8) -> Vec<u8> {
    vec![k; 3 * 1024 * 1024]
}

/// Before the fix a proposal waited on `client_write` with no deadline: 32 writes that never
/// commit held every in-flight slot, and every later envelope waited forever.
#[tokio::test(start_paused = true)]
async fn writes_that_never_commit_end_in_timeout_and_free_every_in_flight_slot() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Hang);
    let proposer = Proposer::spawn("ch".into(), raft.clone(), clients);
    let n = IN_FLIGHT_MAX + 4;
    let answers =
        futures::future::join_all((0..n).map(|k| proposer.submit(entry_sized(k as u8), true)));
    // IN_FLIGHT_MAX hang at a time, each for one proposal timeout.
    let rounds = u32::try_from(n.div_ceil(IN_FLIGHT_MAX)).unwrap() + 1;
    let answers = tokio::time::timeout(PROPOSAL_TIMEOUT * rounds, answers)
        .await
        .expect("every submission answered within a proposal timeout per round of slots");
    assert_eq!(answers.len(), n);
    assert!(answers
        .iter()
        .all(|a| matches!(a, Err(ProposeError::Timeout { .. }))));
    // Slots were released: more than IN_FLIGHT_MAX writes were attempted.
    assert_eq!(raft.writes.load(std::sync::atomic::Ordering::SeqCst), n);
}

#[tokio::test(start_paused = true)]
async fn leader_that_loses_leadership_answers_its_pending_writes_at_once() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Hang);
    let proposer = Proposer::spawn("ch".into(), raft.clone(), clients);
    let pending = tokio::spawn({
        let proposer = proposer.clone();
        async move { proposer.submit(b"pending".to_vec(), true).await }
    });
    while raft.writes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let before = Instant::now();
    raft.lose_leadership();
    let answer = pending.await.unwrap();
    assert_eq!(answer, Err(ProposeError::LeadershipLost));
    assert!(
        before.elapsed() < PROPOSAL_TIMEOUT,
        "answered by the deadline, not the loss"
    );
}

/// A leader cut off from its quorum proposes nothing more: its log and replication traffic
/// would only grow while no entry can commit.
#[tokio::test(start_paused = true)]
async fn leader_without_a_quorum_refuses_at_once_and_proposes_nothing() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Hang);
    raft.metrics
        .send_modify(|m| m.millis_since_quorum_ack = Some(5_000));
    let proposer = Proposer::spawn("ch".into(), raft.clone(), clients);
    let answer = proposer.submit(b"x".to_vec(), true).await;
    assert_eq!(answer, Err(ProposeError::NoQuorum { silent_ms: 5_000 }));
    assert_eq!(raft.writes.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A full queue holds submitters back (backpressure) instead of growing; they are admitted as
/// room frees.
#[tokio::test(start_paused = true)]
async fn full_queue_makes_submitters_wait_until_room_frees() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Hang);
    let proposer = Proposer::spawn_with("ch".into(), raft.clone(), clients, 2);
    // Every slot hung, the queue full.
    let mut held = Vec::new();
    for k in 0..(IN_FLIGHT_MAX + 3) {
        let p = proposer.clone();
        held.push(tokio::spawn(async move {
            p.submit(entry_sized(k as u8), true).await
        }));
    }
    while raft.writes.load(std::sync::atomic::Ordering::SeqCst) < IN_FLIGHT_MAX {
        tokio::task::yield_now().await;
    }
    let waiting = proposer.submit(b"one more".to_vec(), true);
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(PROPOSAL_TIMEOUT / 2, &mut waiting)
            .await
            .is_err(),
        "a submitter got in while the queue was full"
    );
    // Once the hung writes time out, room frees and the waiting submitter is answered too.
    *raft.script.lock().unwrap() = Script::Commit(Response::default());
    assert_eq!(
        tokio::time::timeout(PROPOSAL_TIMEOUT * 4, waiting)
            .await
            .unwrap(),
        Ok(())
    );
    // The writes that held the slots timed out; the ones queued behind them were committed.
    let mut timed_out = 0;
    for h in held {
        match h.await.unwrap() {
            Err(ProposeError::Timeout { .. }) => timed_out += 1,
            other => assert_eq!(other, Ok(())),
        }
    }
    assert_eq!(timed_out, IN_FLIGHT_MAX);
}

/// Before the fix every envelope of a committed entry was answered SUCCESS.
#[tokio::test(start_paused = true)]
async fn envelope_the_cutter_refused_is_answered_by_its_position() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Commit(Response {
        blocks_cut: 0,
        envelopes_refused: 1,
        refused_at: vec![1],
        duplicates_dropped: 0,
        config_refused: Vec::new(),
        pending_in: None,
    }));
    let proposer = Proposer::spawn("ch".into(), raft, clients);
    let (a, b, c) = futures::join!(
        proposer.submit(b"a".to_vec(), true),
        proposer.submit(b"b".to_vec(), true),
        proposer.submit(b"c".to_vec(), true),
    );
    assert_eq!(a, Ok(()));
    assert!(matches!(
        b,
        Err(ProposeError::Refused {
            status: Status::RequestEntityTooLarge,
            ..
        })
    ));
    assert_eq!(c, Ok(()));
}

/// The batch timer counts a block's timeout from the receipt of its oldest envelope; the
/// leader learns which block its entry's envelopes wait in from the answer.
#[tokio::test(start_paused = true)]
async fn leader_notes_when_it_received_the_envelopes_left_pending_in_a_block() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Commit(Response {
        pending_in: Some(7),
        ..Response::default()
    }));
    let proposer = Proposer::spawn("ch".into(), raft.clone(), clients);
    let since = proposer.activity().pending_since;
    let submitted = Instant::now();
    tokio::time::advance(Duration::from_millis(30)).await;
    proposer.submit(b"a".to_vec(), true).await.unwrap();
    assert_eq!(
        *since.borrow(),
        Some((7, submitted + Duration::from_millis(30)))
    );
    // A later entry waiting in the same block does not move the oldest receipt.
    tokio::time::advance(Duration::from_millis(30)).await;
    proposer.submit(b"b".to_vec(), true).await.unwrap();
    assert_eq!(
        *since.borrow(),
        Some((7, submitted + Duration::from_millis(30)))
    );
    // Nothing pending after an entry: nothing noted.
    *raft.script.lock().unwrap() = Script::Commit(Response::default());
    proposer.submit(b"c".to_vec(), true).await.unwrap();
    assert_eq!(
        *since.borrow(),
        Some((7, submitted + Duration::from_millis(30)))
    );
}

/// The quiet cut waits for every envelope the proposer took to be answered: one still in an
/// entry being written counts, one answered or abandoned by its caller does not.
#[tokio::test(start_paused = true)]
async fn outstanding_counts_envelopes_taken_until_answered_or_abandoned() {
    let (_dir, clients) = clients();
    let raft = ScriptedRaft::leader(Script::Commit(Response::default()));
    let proposer = Proposer::spawn("ch".into(), raft.clone(), clients);
    let mut outstanding = proposer.activity().outstanding;
    assert_eq!(*outstanding.borrow_and_update(), 0);
    proposer.submit(b"a".to_vec(), true).await.unwrap();
    assert_eq!(
        *outstanding.borrow_and_update(),
        0,
        "answered: no longer outstanding"
    );
    // A write that hangs keeps its envelope outstanding.
    *raft.script.lock().unwrap() = Script::Hang;
    let hanging = tokio::spawn({
        let proposer = proposer.clone();
        async move { proposer.submit(b"b".to_vec(), true).await }
    });
    outstanding.changed().await.unwrap();
    assert_eq!(*outstanding.borrow_and_update(), 1);
    // Its caller goes away (a Broadcast stream closed): the envelope no longer counts.
    hanging.abort();
    outstanding.changed().await.unwrap();
    assert_eq!(*outstanding.borrow_and_update(), 0);
}
