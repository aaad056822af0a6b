//! The batch timer against a scripted Raft on a paused clock: when it proposes `TimeToCut`,
//! counted from which moment, and that it does not spin after a cut it proposed is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::pb::common::Block;

use super::super::scripted_raft::Script;
use super::super::scripted_raft::ScriptedRaft;
use super::super::test_material;
use super::*;

const TIMEOUT: Duration = Duration::from_millis(100);

struct Timer {
    raft: ScriptedRaft,
    status: watch::Sender<SmStatus>,
    since: watch::Sender<Option<(u64, Instant)>>,
    /// Envelopes the proposer took and has not answered; 1 unless a test sets it.
    outstanding: watch::Sender<usize>,
    /// How long an entry takes now; 0 (no linger) unless a test sets it.
    round: Arc<super::super::proposer::RoundTime>,
    _config: watch::Sender<Arc<Channel>>,
}

/// A batch timer for the test channel (its timeout is [`TIMEOUT`]), leading unless told, with
/// its proposer busy (one envelope outstanding: no quiet cut) unless told.
fn start(raft: ScriptedRaft) -> Timer {
    let (_dir, generated) = test_material::generate();
    let genesis =
        Block::decode(std::fs::read(&generated.channels[0].1).unwrap().as_slice()).unwrap();
    let channel = Channel::from_config_block(&genesis).unwrap();
    assert_eq!(channel.batch_timeout_ms(), TIMEOUT.as_millis() as u64);
    let config = watch::Sender::new(Arc::new(channel));
    let status = watch::Sender::new(SmStatus::default());
    let since = watch::Sender::new(None);
    let outstanding = watch::Sender::new(1);
    let round = Arc::new(super::super::proposer::RoundTime::default());
    tokio::spawn(run(
        raft.clone(),
        status.subscribe(),
        config.subscribe(),
        Activity {
            pending_since: since.subscribe(),
            outstanding: outstanding.subscribe(),
            round: round.clone(),
        },
    ));
    Timer {
        raft,
        status,
        since,
        outstanding,
        round,
        _config: config,
    }
}

fn pending(block: u64) -> SmStatus {
    SmStatus {
        next_block: block,
        pending: 3,
        ..SmStatus::default()
    }
}

/// Runs `test` on a paused clock in a thread of its own and fails if it has not ended within
/// 30 s of real time: a timer that proposes in a loop keeps the runtime busy, so the paused
/// clock never advances and the test would otherwise hang instead of failing.
fn on_paused_clock<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(test());
        let _ = done.send(());
    });
    match ended.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the timer never let the clock advance: it proposes cuts in a loop")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the test failed (above)"),
    }
}

/// Lets the timer run until the clock reaches `at` (the paused clock auto-advances only when
/// every task is idle).
async fn until(at: Instant) {
    tokio::time::sleep_until(at).await;
    tokio::task::yield_now().await;
}

/// Before the change the timer started when the leader saw the envelopes applied, one Raft
/// round (the ack) after it received them: a block cut by the timer waited timeout + ack.
#[test]
fn block_cut_by_the_timer_counts_from_when_the_leader_received_its_first_envelope() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        let received = Instant::now();
        // Applied one 60 ms round after receipt; the proposer notes the receipt when answered.
        until(received + Duration::from_millis(60)).await;
        t.status.send_replace(pending(5));
        t.since.send_replace(Some((5, received)));
        until(received + TIMEOUT + Duration::from_millis(80)).await;
        let cuts = t.raft.cuts.lock().unwrap().clone();
        assert_eq!(cuts, vec![(5, received + TIMEOUT)]);
    });
}

/// Envelopes this leader did not propose (a previous leader's) have no receipt here: they wait
/// the full timeout from when this node sees them pending; a note for an older block is ignored.
#[test]
fn envelopes_of_a_previous_leader_wait_a_full_timeout_from_when_they_are_seen() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        t.since.send_replace(Some((4, Instant::now())));
        until(Instant::now() + Duration::from_millis(50)).await;
        let seen = Instant::now();
        t.status.send_replace(pending(5));
        until(seen + TIMEOUT * 3 / 2).await;
        let cuts = t.raft.cuts.lock().unwrap().clone();
        assert_eq!(cuts, vec![(5, seen + TIMEOUT)]);
    });
}

/// A cut whose marker was lost (or not yet applied) is proposed again one timeout later, not
/// in a loop: the receipt, now more than a timeout old, must not pull the retry's deadline back.
#[test]
fn lost_cut_is_proposed_again_after_another_timeout_not_at_once() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        let received = Instant::now();
        t.status.send_replace(pending(9));
        t.since.send_replace(Some((9, received)));
        until(received + TIMEOUT * 5 / 2).await;
        // Another status for the same block (more envelopes applied) while the cut is outstanding.
        t.status.send_replace(SmStatus {
            pending: 4,
            ..pending(9)
        });
        until(received + TIMEOUT * 7 / 2).await;
        let cuts = t.raft.cuts.lock().unwrap().clone();
        assert_eq!(
            cuts,
            vec![
                (9, received + TIMEOUT),
                (9, received + TIMEOUT * 2),
                (9, received + TIMEOUT * 3)
            ]
        );
    });
}

#[test]
fn follower_never_proposes_a_cut() {
    on_paused_clock(|| async {
        let raft = ScriptedRaft::leader(Script::Commit(Default::default()));
        raft.lose_leadership();
        let t = start(raft);
        let received = Instant::now();
        t.status.send_replace(pending(2));
        t.since.send_replace(Some((2, received)));
        t.outstanding.send_replace(0);
        until(received + TIMEOUT * 3).await;
        assert!(t.raft.cuts.lock().unwrap().is_empty());
        assert!(t.raft.quiet_cuts.lock().unwrap().is_empty());
    });
}

/// A follower's timer fires at its deadline without proposing; when the node is then elected,
/// its first quiet moment cuts the pending block, not a timeout after the follower's last
/// wake-up (before, the follower's wake-up counted as a proposed cut and disabled the quiet cut
/// of that block).
#[test]
fn follower_elected_leader_cuts_quietly_without_waiting_out_a_timeout() {
    on_paused_clock(|| async {
        let raft = ScriptedRaft::leader(Script::Commit(Default::default()));
        raft.lose_leadership();
        let t = start(raft);
        let seen = Instant::now();
        t.status.send_replace(pending(2));
        t.outstanding.send_replace(0);
        // The follower's deadline passes (more than once) with nothing proposed.
        until(seen + TIMEOUT * 5 / 2).await;
        assert!(t.raft.cuts.lock().unwrap().is_empty());
        assert!(t.raft.quiet_cuts.lock().unwrap().is_empty());
        t.raft.win_leadership();
        // A client's envelope reaches the new leader and is answered: the leader is quiet.
        t.outstanding.send_replace(1);
        tokio::task::yield_now().await;
        let answered = Instant::now();
        t.outstanding.send_replace(0);
        until(answered + TIMEOUT / 4).await;
        assert_eq!(t.raft.quiet_cuts.lock().unwrap().len(), 1);
        assert!(t.raft.cuts.lock().unwrap().is_empty());
    });
}

/// A leader with nothing more on its way to the log cuts what is pending at once instead of
/// letting it wait out the timeout.
#[test]
fn quiet_leader_cuts_the_pending_block_at_once() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        t.outstanding.send_replace(0);
        let applied = Instant::now();
        t.status.send_replace(pending(6));
        t.since.send_replace(Some((6, applied)));
        until(applied + TIMEOUT / 2).await;
        assert_eq!(
            t.raft.quiet_cuts.lock().unwrap().clone(),
            vec![(6, applied)]
        );
        assert!(t.raft.cuts.lock().unwrap().is_empty());
    });
}

/// While envelopes it took are still being ordered, the leader does not cut: they would miss
/// the block by one entry. It cuts as soon as the last of them is answered, once per block.
#[test]
fn busy_leader_cuts_when_its_last_envelope_is_answered_once_per_block() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        let received = Instant::now();
        t.status.send_replace(pending(8));
        t.since.send_replace(Some((8, received)));
        until(received + Duration::from_millis(30)).await;
        assert!(t.raft.quiet_cuts.lock().unwrap().is_empty(), "busy: no cut");
        let answered = Instant::now();
        t.outstanding.send_replace(0);
        until(answered + Duration::from_millis(10)).await;
        // More envelopes for the same block come and go before the cut is applied.
        t.outstanding.send_replace(2);
        t.status.send_replace(SmStatus {
            pending: 5,
            ..pending(8)
        });
        t.outstanding.send_replace(0);
        until(answered + Duration::from_millis(20)).await;
        assert_eq!(
            t.raft.quiet_cuts.lock().unwrap().clone(),
            vec![(8, answered)]
        );
        // The next block is cut when it is quiet again.
        let next = Instant::now();
        t.status.send_replace(pending(9));
        until(next + Duration::from_millis(10)).await;
        assert_eq!(
            t.raft.quiet_cuts.lock().unwrap().clone(),
            vec![(8, answered), (9, next)]
        );
        assert!(t.raft.cuts.lock().unwrap().is_empty());
    });
}

/// The leader waits to be quiet for as long as one of its entries takes now before it cuts: an
/// envelope arriving meanwhile would only have waited that long for its own entry. Any new
/// envelope restarts the wait.
#[test]
fn quiet_cut_waits_one_entry_round_of_quiet_and_restarts_when_an_envelope_arrives() {
    on_paused_clock(|| async {
        let t = start(ScriptedRaft::leader(Script::Commit(Default::default())));
        let round = Duration::from_millis(20);
        t.round.observe(round);
        let start = Instant::now();
        t.status.send_replace(pending(4));
        t.outstanding.send_replace(0);
        until(start + Duration::from_millis(10)).await;
        // Another envelope, answered at once: quiet again from now.
        t.outstanding.send_replace(1);
        tokio::task::yield_now().await;
        t.outstanding.send_replace(0);
        let quiet = Instant::now();
        until(quiet + round / 2).await;
        assert!(
            t.raft.quiet_cuts.lock().unwrap().is_empty(),
            "not quiet long enough"
        );
        until(quiet + round * 2).await;
        assert_eq!(
            t.raft.quiet_cuts.lock().unwrap().clone(),
            vec![(4, quiet + round)]
        );
        assert!(t.raft.cuts.lock().unwrap().is_empty());
    });
}
