//! Every scenario the harness runs (docs/chaos.md lists them with what they prove).

use super::Action;
use super::Pattern;
use super::Scenario;
use super::Shape;
use super::Target;

const SHORT: (f64, f64) = (3.0, 6.0);
const LONG: (f64, f64) = (6.0, 10.0);
const GAP: (f64, f64) = (2.0, 4.0);

fn repeat(
    name: &'static str,
    about: &'static str,
    shape: Shape,
    action: Action,
    targets: &'static [Target],
    hold_s: (f64, f64),
) -> Scenario {
    Scenario {
        name,
        about,
        shape,
        pattern: Pattern::Repeat {
            action,
            targets,
            hold_s,
            gap_s: GAP,
        },
    }
}

/// Proxied network faults, for the mixed scenario.
static NET_MENU: &[(Action, Target)] = &[
    (Action::Isolate, Target::Leader),
    (Action::Isolate, Target::Follower(0)),
    (Action::SplitMinority, Target::Leader),
    (Action::OneWayLoss, Target::Leader),
    (
        Action::Delay {
            latency_ms: 100,
            jitter_ms: 100,
        },
        Target::Follower(1),
    ),
    (Action::Reset, Target::Leader),
];

/// Process faults, for the mixed scenario.
static PROCESS_MENU: &[(Action, Target)] = &[
    (Action::Kill, Target::Leader),
    (Action::Kill, Target::Follower(0)),
    (Action::Pause, Target::Leader),
    (Action::Pause, Target::Follower(1)),
    (Action::Kill, Target::ConnectedPeer(0)),
];

/// The catalogue, in the order `chaos list` prints it.
pub fn all() -> Vec<Scenario> {
    let plain = Shape::plain();
    let proxied = Shape::proxied();
    let crash = Shape {
        failpoints: true,
        ..plain
    };
    vec![
        repeat(
            "leader_kill",
            "SIGKILL the channel's leader orderer under load; restart it after the hold",
            plain,
            Action::Kill,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "follower_kill",
            "SIGKILL a follower orderer under load; restart it after the hold",
            plain,
            Action::Kill,
            &[Target::Follower(0), Target::Follower(1)],
            SHORT,
        ),
        repeat(
            "all_orderers_kill",
            "SIGKILL every orderer at once; restart them all (the kernel keeps what they wrote)",
            plain,
            Action::Kill,
            &[Target::AllOrderers],
            SHORT,
        ),
        repeat(
            "orderers_power_cut",
            "Every orderer loses power at once: SIGKILL, and every write not yet fsynced is \
             lost (LD_PRELOAD durability log, run/powercut.rs); restart them all",
            plain,
            Action::PowerCut,
            &[Target::AllOrderers],
            SHORT,
        ),
        repeat(
            "rolling_restart",
            "Graceful restart (SIGTERM, start) of every orderer, one after another",
            plain,
            Action::RollingRestart,
            &[Target::AllOrderers],
            SHORT,
        ),
        repeat(
            "leader_pause",
            "SIGSTOP the leader (a long GC pause or a frozen VM); SIGCONT after the hold",
            plain,
            Action::Pause,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "follower_wipe_rejoin",
            "SIGKILL a follower, delete its data dir, restart it: it rejoins from the others",
            plain,
            Action::KillAndWipe,
            &[Target::Follower(0)],
            SHORT,
        ),
        repeat(
            "leader_disconnect",
            "docker network disconnect the leader's container (its links and its clients' \
             connections cut); connect it again after the hold [--backend docker]",
            plain,
            Action::Disconnect,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "leader_isolate",
            "Cut every link of the leader (connections stay open, nothing passes)",
            proxied,
            Action::Isolate,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "follower_isolate",
            "Cut every link of a follower",
            proxied,
            Action::Isolate,
            &[Target::Follower(0), Target::Follower(1)],
            SHORT,
        ),
        repeat(
            "minority_split",
            "Split the orderers: the leader alone against the majority",
            proxied,
            Action::SplitMinority,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "bridge",
            "Two sides that cannot see each other and one orderer that sees both",
            proxied,
            Action::Bridge,
            &[Target::Leader, Target::Follower(0)],
            SHORT,
        ),
        repeat(
            "one_way_loss",
            "Bytes from the leader to one follower are lost; the other direction passes",
            proxied,
            Action::OneWayLoss,
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "latency_jitter",
            "150 ms latency with 100 ms jitter on every link of each orderer in turn",
            proxied,
            Action::Delay {
                latency_ms: 150,
                jitter_ms: 100,
            },
            &[Target::Leader, Target::Follower(0), Target::Follower(1)],
            SHORT,
        ),
        repeat(
            "connection_resets",
            "Every connection of the leader reset again and again during the hold",
            proxied,
            Action::Reset,
            &[Target::Leader, Target::Follower(0)],
            SHORT,
        ),
        repeat(
            "blackhole_until_snapshot",
            "Isolate a follower long enough that the others snapshot past it; it comes back by \
             snapshot install and block catch-up",
            proxied,
            Action::Isolate,
            &[Target::Follower(0)],
            LONG,
        ),
        repeat(
            "peer_kill_mid_commit",
            "SIGKILL an orderer-connected peer while it commits; it resumes at its savepoint",
            plain,
            Action::Kill,
            &[Target::ConnectedPeer(0), Target::ConnectedPeer(1)],
            SHORT,
        ),
        repeat(
            "gossip_peer_cut_off",
            "Cut a gossip-only peer off from its org's peers; it catches up after the heal",
            proxied,
            Action::CutFromOrg,
            &[Target::GossipPeer(0), Target::GossipPeer(1)],
            SHORT,
        ),
        repeat(
            "consenter_churn",
            "Remove a follower from the consenters by config update under load, then add it \
             back and restart it (learner, promoted when caught up)",
            plain,
            Action::ConsenterRemoveAdd,
            &[Target::Follower(0), Target::Follower(1)],
            LONG,
        ),
        repeat(
            "forged_gossip_blocks",
            "A malicious member of Org1 pushes blocks it signed itself to Org1's connected peer: \
             refused there, cut off, seen by no other peer",
            plain,
            Action::ForgeGossip,
            &[Target::ConnectedPeer(0)],
            SHORT,
        ),
        Scenario {
            name: "mixed_process_faults",
            about: "Kills and pauses of leaders, followers and a peer, drawn from the seed",
            shape: plain,
            pattern: Pattern::Mix {
                menu: PROCESS_MENU,
                hold_s: SHORT,
                gap_s: GAP,
            },
        },
        Scenario {
            name: "mixed_network_faults",
            about: "Isolation, splits, one-way loss, latency and resets, drawn from the seed",
            shape: proxied,
            pattern: Pattern::Mix {
                menu: NET_MENU,
                hold_s: SHORT,
                gap_s: GAP,
            },
        },
        repeat(
            "crash_at_raft_append",
            "A follower crashes between writing Raft entries and their fsync (failpoint)",
            crash,
            Action::CrashAt("orderer::raft_log_append::before_fsync"),
            &[Target::Follower(0)],
            SHORT,
        ),
        repeat(
            "crash_at_apply",
            "The leader crashes in the state machine's apply of a batch (failpoint)",
            crash,
            Action::CrashAt("orderer::sm_apply::before"),
            &[Target::Leader],
            SHORT,
        ),
        repeat(
            "crash_at_peer_commit",
            "A connected peer crashes in the middle of a commit batch (failpoint)",
            crash,
            Action::CrashAt("peer::commit_batch::before"),
            &[Target::ConnectedPeer(0)],
            SHORT,
        ),
        // The node's environment: its clock (libfaketime) and its disk (a small tmpfs).
        // Skipped with the reason when the machine cannot (Scenario::unavailable).
        Scenario {
            name: "clock_skew",
            about: "A follower, then the leader, restarted with its wall clock 45 s ahead and \
                    10% fast, then 45 s behind and 10% slow (libfaketime); restarted on time",
            shape: plain,
            pattern: Pattern::Sequence {
                steps: &[
                    (
                        Action::ClockSkew {
                            offset_s: 45,
                            rate_permille: 1100,
                        },
                        Target::Follower(0),
                    ),
                    (
                        Action::ClockSkew {
                            offset_s: -45,
                            rate_permille: 900,
                        },
                        Target::Leader,
                    ),
                ],
                hold_s: SHORT,
                gap_s: GAP,
            },
        },
        repeat(
            "follower_disk_full",
            "A follower's data dir on a tmpfs with 256 KiB free fills under load: it must stop \
             cleanly; moved back to the normal disk, it restarts and catches up",
            plain,
            Action::DiskFull { headroom_kib: 256 },
            &[Target::Follower(0)],
            LONG,
        ),
    ]
}

/// The scenario named `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}
