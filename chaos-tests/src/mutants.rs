//! `chaos mutants`: the harness proves its own power. For each planted bug
//! ([`shared_proto::mutants`]), the scenarios most likely to expose it run one after another
//! against nodes with the bug switched on, until one fails a check; `DIR/mutants.json` says
//! which scenario and check caught it and after how long.
//!
//! Each run is a child `chaos run` with `WEFT_MUTANT` in its environment, which every node it
//! starts inherits: the harness process itself is untouched, and the command that reruns a
//! catch is printed as is.

use std::path::Path;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use shared_proto::mutants::Mutant;

use crate::report::MutantOutcome;
use crate::report::MutantsReport;
use crate::report::RunReport;

/// The scenarios that should catch `m`, in the order they are tried, and why.
pub fn catchers(m: Mutant) -> &'static [&'static str] {
    match m {
        // The isolated leader answers SUCCESS for envelopes it can never commit.
        Mutant::AckBeforeCommit => &["leader_isolate", "leader_kill", "minority_split"],
        // Only a power cut loses what the OS held but never wrote.
        Mutant::NoFsyncOnAppend => &["orderers_power_cut", "all_orderers_kill"],
        // The raw client's hedged envelopes are ordered twice.
        Mutant::RetryWindowOff => &["leader_kill", "follower_kill"],
        // Nodes cut different blocks from the same log.
        Mutant::CutByLocalClock => &["leader_kill", "follower_kill"],
        // Concurrent transfers from one account both commit: the balances stop adding up.
        Mutant::MvccCheckSkipped => &["leader_kill", "follower_kill"],
        // The forged blocks reach the target's org mates.
        Mutant::GossipRelaysBeforeVerifying => &["forged_gossip_blocks"],
    }
}

/// What `chaos mutants` runs with.
#[derive(Debug, Clone)]
pub struct MutantsOptions {
    /// The chaos executable (built with `--features mutants`).
    pub exe: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    pub duration_s: f64,
    /// Only these (all when empty).
    pub only: Vec<Mutant>,
}

/// Runs every mutant's catchers until one catches it; writes `OUT/mutants.json`.
pub fn run_all(o: &MutantsOptions) -> anyhow::Result<MutantsReport> {
    anyhow::ensure!(
        cfg!(feature = "mutants"),
        "chaos mutants needs a build with planted bugs: cargo run --release -p chaos-tests \
         --features mutants --bin chaos -- mutants ..."
    );
    std::fs::create_dir_all(&o.out)?;
    let chosen: Vec<Mutant> = if o.only.is_empty() {
        Mutant::ALL.to_vec()
    } else {
        o.only.clone()
    };
    let mut report = MutantsReport::default();
    for (i, m) in chosen.iter().enumerate() {
        println!("[{}/{}] mutant {}", i + 1, chosen.len(), m.name());
        let outcome = hunt(o, *m)?;
        println!(
            "[{}/{}] mutant {}: {} in {:.0} s",
            i + 1,
            chosen.len(),
            m.name(),
            if outcome.caught {
                format!("CAUGHT by {}", outcome.by)
            } else {
                "NOT CAUGHT".to_owned()
            },
            outcome.seconds
        );
        report.mutants.push(outcome);
        report.write(&o.out)?;
    }
    Ok(report)
}

/// Runs `m`'s catchers one after another until a check fails.
fn hunt(o: &MutantsOptions, m: Mutant) -> anyhow::Result<MutantOutcome> {
    let started = Instant::now();
    for scenario in catchers(m) {
        let dir = o.out.join(m.name()).join(scenario);
        let report = run_child(o, m, scenario, &dir)?;
        if let Some(why) = report.check_details.get("harness") {
            // The harness could not run it (no check ran): that proves nothing either way.
            println!("    {scenario}: the harness failed ({why}); trying the next scenario");
            continue;
        }
        if !report.passed {
            return Ok(MutantOutcome {
                name: m.name().to_owned(),
                caught: true,
                by: format!("{scenario}/{}", report.failed_checks().join("+")),
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(MutantOutcome {
        name: m.name().to_owned(),
        caught: false,
        by: String::new(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `WEFT_MUTANT=m chaos run --scenario S ...` as a child; its report.
fn run_child(
    o: &MutantsOptions,
    m: Mutant,
    scenario: &str,
    dir: &Path,
) -> anyhow::Result<RunReport> {
    let status = std::process::Command::new(&o.exe)
        .env(shared_proto::mutants::ENV, m.name())
        .args(["run", "--scenario", scenario, "--seed"])
        .arg(o.seed.to_string())
        .arg("--duration")
        .arg(o.duration_s.to_string())
        .arg("--out")
        .arg(dir)
        .status()
        .with_context(|| format!("running {}", o.exe.display()))?;
    let path = dir.join(crate::report::REPORT_JSON);
    RunReport::read(&path).with_context(|| {
        format!(
            "mutant {} scenario {scenario}: no report at {} (chaos run exited {status})",
            m.name(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_has_catchers_that_exist() {
        for m in Mutant::ALL {
            assert!(!catchers(m).is_empty(), "{}", m.name());
            for s in catchers(m) {
                assert!(
                    crate::scenario::find(s).is_some(),
                    "{}: no scenario {s}",
                    m.name()
                );
            }
        }
    }
}
