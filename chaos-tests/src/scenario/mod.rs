//! The scenario catalogue: each scenario is a name, what it does, the cluster it needs, and a
//! fault schedule drawn from a seed. The same (scenario, seed, duration) always gives the same
//! schedule (asserted below); targets such as "the leader" are resolved when the fault starts,
//! and the report names the node it hit.
//!
//! A run's timeline: the workload runs from 0 to `duration`; faults start after a warm-up
//! (10% of the run, at least 3 s) and every fault has healed by 70% of the run, so the end of
//! each run shows the cluster making progress again (`live_after_heal`).

mod catalogue;

pub use catalogue::all;
pub use catalogue::find;
use rand::Rng as _;
use rand::SeedableRng as _;

/// What a fault hits, resolved when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The orderer leading the channel.
    Leader,
    /// A follower orderer: the n-th (modulo their number) in name order.
    Follower(usize),
    /// Every orderer.
    AllOrderers,
    /// The n-th orderer (modulo their number).
    Orderer(usize),
    /// A peer connected to the orderers: the n-th (modulo).
    ConnectedPeer(usize),
    /// A gossip-only peer: the n-th (modulo).
    GossipPeer(usize),
}

/// What a fault does; each heals at the end of its hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL, restarted at the end of the hold.
    Kill,
    /// SIGKILL, data dir deleted, restarted at the end of the hold (rejoins from the others).
    KillAndWipe,
    /// SIGSTOP, SIGCONT at the end of the hold.
    Pause,
    /// Restarted with its wall clock `offset_s` seconds off, running at `rate_permille`
    /// thousandths of the real rate (libfaketime, harness::clock); restarted on the real clock
    /// at the end of the hold.
    ClockSkew { offset_s: i32, rate_permille: u32 },
    /// Restarted with its data dir on a tmpfs with `headroom_kib` KiB free, so the load fills
    /// it (harness::disk); at the end of the hold stopped, moved back onto the normal disk and
    /// restarted.
    DiskFull { headroom_kib: u64 },
    /// Graceful stop (SIGTERM) and start again, one orderer after another.
    RollingRestart,
    /// Every link to and from the node carries nothing (connections stay open).
    Isolate,
    /// The target (with the followers needed to stay a minority) against the rest.
    SplitMinority,
    /// Two sides that cannot talk, and one orderer that talks to both.
    Bridge,
    /// Bytes from the target to one other orderer are dropped; the other way passes.
    OneWayLoss,
    /// Latency (ms) with jitter (ms) on every link of the target.
    Delay { latency_ms: u64, jitter_ms: u64 },
    /// Every connection of the target reset, repeatedly during the hold.
    Reset,
    /// A gossip-only peer cut off from the peers of its org.
    CutFromOrg,
    /// The process crashes at a failpoint (harness builds with `--features failpoints`).
    CrashAt(&'static str),
    /// The target orderer is removed from the consenters by a config update; at the end of
    /// the hold it is added back and restarted (a removed node does not restart its Raft by
    /// itself: docs/operations.md), then caught up and promoted.
    ConsenterRemoveAdd,
    /// SIGKILL, and every write the process had not fsynced is lost (run/powercut.rs);
    /// restarted at the end of the hold.
    PowerCut,
    /// A malicious member of the target peer's org pushes blocks it signed itself to the
    /// target during the hold (run/forge.rs).
    ForgeGossip,
    /// The node's container is taken off its Docker network (`docker network disconnect`):
    /// every link and every client connection cut; reconnected at the end of the hold. The
    /// docker backend only.
    Disconnect,
}

impl Action {
    /// The report's `kind`.
    pub fn kind(&self) -> String {
        match self {
            Action::Kill => "kill".into(),
            Action::KillAndWipe => "kill_and_wipe".into(),
            Action::Pause => "pause".into(),
            Action::ClockSkew {
                offset_s,
                rate_permille,
            } => format!(
                "clock_skew_{offset_s:+}s_x{}.{:03}",
                rate_permille / 1000,
                rate_permille % 1000
            ),
            Action::DiskFull { .. } => "disk_full".into(),
            Action::RollingRestart => "rolling_restart".into(),
            Action::Isolate => "isolate".into(),
            Action::SplitMinority => "split".into(),
            Action::Bridge => "bridge".into(),
            Action::OneWayLoss => "one_way_loss".into(),
            Action::Delay { latency_ms, .. } => format!("delay_{latency_ms}ms"),
            Action::Reset => "reset".into(),
            Action::CutFromOrg => "cut_from_org".into(),
            Action::CrashAt(point) => format!("crash_at:{point}"),
            Action::ConsenterRemoveAdd => "consenter_remove_add".into(),
            Action::ForgeGossip => "forge_gossip".into(),
            Action::PowerCut => "power_cut".into(),
            Action::Disconnect => "disconnect".into(),
        }
    }

    /// Whether the fault goes through the link proxies.
    pub fn needs_proxies(&self) -> bool {
        matches!(
            self,
            Action::Isolate
                | Action::SplitMinority
                | Action::Bridge
                | Action::OneWayLoss
                | Action::Delay { .. }
                | Action::Reset
                | Action::CutFromOrg
        )
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Seconds after the run starts.
    pub at_s: f64,
    /// Seconds the fault lasts before it heals.
    pub hold_s: f64,
    pub action: Action,
    pub target: Target,
}

/// The shape of the cluster a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub orderers: usize,
    pub orgs: usize,
    pub peers_per_org: usize,
    /// Faults go through per-link proxies.
    pub proxied: bool,
    /// The scenario needs a build with failpoints.
    pub failpoints: bool,
}

impl Shape {
    pub const fn plain() -> Self {
        Shape {
            orderers: 3,
            orgs: 2,
            peers_per_org: 2,
            proxied: false,
            failpoints: false,
        }
    }

    pub const fn proxied() -> Self {
        Shape {
            proxied: true,
            ..Shape::plain()
        }
    }
}

/// How a scenario draws its faults.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Faults of `action` on targets `targets` (cycled), one after another, holds drawn in
    /// `hold_s`, at least `gap_s` apart, as many as fit in the fault window.
    Repeat {
        action: Action,
        targets: &'static [Target],
        hold_s: (f64, f64),
        gap_s: (f64, f64),
    },
    /// Faults drawn from `menu` (action, target) at random.
    Mix {
        menu: &'static [(Action, Target)],
        hold_s: (f64, f64),
        gap_s: (f64, f64),
    },
    /// The faults of `steps` in their order (cycled), holds and gaps drawn as for `Repeat`.
    Sequence {
        steps: &'static [(Action, Target)],
        hold_s: (f64, f64),
        gap_s: (f64, f64),
    },
}

impl Pattern {
    /// Every action the pattern can schedule.
    fn actions(&self) -> Vec<&Action> {
        match self {
            Pattern::Repeat { action, .. } => vec![action],
            Pattern::Mix { menu: steps, .. } | Pattern::Sequence { steps, .. } => {
                steps.iter().map(|(a, _)| a).collect()
            }
        }
    }
}

/// A scenario of the catalogue.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub shape: Shape,
    pub pattern: Pattern,
}

/// The fault window of a run of `duration_s` seconds: (start, end).
pub fn fault_window(duration_s: f64) -> (f64, f64) {
    let start = (duration_s * 0.1).max(3.0);
    let end = (duration_s * 0.7).max(start + 1.0);
    (start, end)
}

fn draw(rng: &mut rand::rngs::StdRng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// A stable 64-bit hash of a name (FNV-1a), so each scenario draws its own sequence.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Faults the docker backend carries out: the process faults, through Docker.
fn docker_can(action: &Action) -> bool {
    matches!(
        action,
        Action::Kill
            | Action::KillAndWipe
            | Action::Pause
            | Action::RollingRestart
            | Action::Disconnect
    )
}

impl Scenario {
    /// Why the scenario cannot run on `backend` here, if it cannot. The run is then skipped,
    /// not failed.
    pub fn unavailable_on(&self, backend: &crate::harness::Backend) -> Option<String> {
        let actions = self.pattern.actions();
        match backend {
            crate::harness::Backend::Docker { image } => {
                if let Some(a) = actions.iter().find(|a| !docker_can(a)) {
                    return Some(format!(
                        "the docker backend does not carry out {} faults (kill, kill and wipe, \
                         pause, rolling restart, disconnect only)",
                        a.kind()
                    ));
                }
                crate::harness::docker::unavailable(image)
            }
            crate::harness::Backend::Process => {
                if actions.iter().any(|a| **a == Action::Disconnect) {
                    return Some("disconnect faults need --backend docker".into());
                }
                self.unavailable()
            }
        }
    }

    /// Why this machine cannot run the scenario, if it cannot: libfaketime missing (clock
    /// skew) or mounting a tmpfs refused (disk full). The run is then skipped, not failed.
    pub fn unavailable(&self) -> Option<String> {
        let actions = self.pattern.actions();
        if actions
            .iter()
            .any(|a| matches!(a, Action::ClockSkew { .. }))
        {
            if let Err(why) = crate::harness::clock::libfaketime() {
                return Some(why);
            }
        }
        if actions.iter().any(|a| matches!(a, Action::DiskFull { .. })) {
            if let Err(why) = crate::harness::disk::probe(&std::env::temp_dir()) {
                return Some(why);
            }
        }
        None
    }

    /// The fault schedule of a run: a function of the seed and the duration only.
    pub fn schedule(&self, seed: u64, duration_s: f64) -> Vec<Step> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ name_hash(self.name));
        let (start, end) = fault_window(duration_s);
        let mut steps = Vec::new();
        let mut at = start;
        let mut n = 0usize;
        loop {
            let (action, target, hold) = match &self.pattern {
                Pattern::Repeat {
                    action,
                    targets,
                    hold_s,
                    ..
                } => {
                    let target = targets[n % targets.len().max(1)];
                    (action.clone(), target, draw(&mut rng, *hold_s))
                }
                Pattern::Mix { menu, hold_s, .. } => {
                    let (a, t) = &menu[rng.gen_range(0..menu.len().max(1))];
                    (a.clone(), *t, draw(&mut rng, *hold_s))
                }
                Pattern::Sequence { steps, hold_s, .. } => {
                    let (a, t) = &steps[n % steps.len().max(1)];
                    (a.clone(), *t, draw(&mut rng, *hold_s))
                }
            };
            // A rolling restart takes a few seconds per orderer whatever the hold says.
            let hold = match action {
                Action::RollingRestart => hold.max(2.0 * self.shape.orderers as f64),
                _ => hold,
            };
            if at + hold > end && !steps.is_empty() {
                break;
            }
            let hold = hold.min((end - at).max(1.0));
            steps.push(Step {
                at_s: at,
                hold_s: hold,
                action,
                target,
            });
            let gap = match &self.pattern {
                Pattern::Repeat { gap_s, .. }
                | Pattern::Mix { gap_s, .. }
                | Pattern::Sequence { gap_s, .. } => draw(&mut rng, *gap_s),
            };
            at += hold + gap;
            n += 1;
            if at >= end {
                break;
            }
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn same_seed_gives_the_same_schedule_for_every_scenario() {
        for s in all() {
            for seed in [0, 1, 42, u64::MAX] {
                assert_eq!(s.schedule(seed, 60.0), s.schedule(seed, 60.0), "{}", s.name);
            }
        }
    }

    #[test]
    fn different_seeds_give_different_schedules() {
        let varied = all()
            .iter()
            .filter(|s| (0..8).any(|seed| s.schedule(seed, 60.0) != s.schedule(seed + 1, 60.0)))
            .count();
        assert!(varied * 2 >= all().len(), "only {varied} scenarios vary");
    }

    #[test]
    fn every_fault_starts_after_the_warm_up_and_heals_within_the_fault_window() {
        for s in all() {
            for seed in 0..16 {
                let (start, end) = fault_window(60.0);
                let steps = s.schedule(seed, 60.0);
                assert!(!steps.is_empty(), "{} has no fault", s.name);
                for (i, step) in steps.iter().enumerate() {
                    assert!(step.at_s >= start, "{}: {step:?}", s.name);
                    assert!(
                        step.at_s + step.hold_s <= end + 1e-9,
                        "{}: {step:?}",
                        s.name
                    );
                    if let Some(next) = steps.get(i + 1) {
                        assert!(next.at_s >= step.at_s + step.hold_s, "{}: overlap", s.name);
                    }
                }
            }
        }
    }

    #[test]
    fn a_sequence_schedules_every_step_in_its_order_even_in_a_short_run() {
        let s = find("clock_skew").unwrap();
        let Pattern::Sequence { steps, .. } = &s.pattern else {
            panic!("clock_skew is a sequence")
        };
        for seed in 0..16 {
            let got = s.schedule(seed, 30.0);
            assert!(got.len() >= steps.len(), "seed {seed}: {got:?}");
            for (i, step) in got.iter().enumerate() {
                let (action, target) = &steps[i % steps.len()];
                assert_eq!((&step.action, &step.target), (action, target));
            }
        }
    }

    #[test]
    fn the_catalogue_has_at_least_sixteen_uniquely_named_scenarios() {
        let names: std::collections::BTreeSet<_> = all().iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all().len());
        assert!(all().len() >= 16, "{} scenarios", all().len());
        assert!(find("leader_kill").is_some());
        assert!(find("no_such_scenario").is_none());
    }

    #[test]
    fn each_backend_skips_the_faults_it_cannot_carry_out_and_says_which() {
        use crate::harness::Backend;
        let process = Backend::Process;
        let why = find("leader_disconnect").unwrap().unavailable_on(&process);
        assert!(why.unwrap().contains("--backend docker"));
        assert_eq!(find("leader_kill").unwrap().unavailable_on(&process), None);
        // An image no engine has: the docker backend refuses before any Docker call for a
        // fault it cannot carry out, and names it.
        let docker = Backend::Docker {
            image: "weft-no-such-image:none".into(),
        };
        let why = find("leader_isolate").unwrap().unavailable_on(&docker);
        assert!(why.unwrap().contains("does not carry out isolate faults"));
        let why = find("crash_at_apply").unwrap().unavailable_on(&docker);
        assert!(why.unwrap().contains("crash_at"));
        let why = find("leader_kill").unwrap().unavailable_on(&docker);
        assert!(why.is_some(), "no engine or no such image: skipped");
    }
}
