//! Planted bugs (harness builds only: feature `mutants`; node start -> [mutants]).
//!
//! The chaos harness proves its own power by running its scenarios against nodes with one
//! known bug switched on and showing that some checker fails (`chaos mutants`). Each bug is a
//! [`Mutant`]; a node process reads which one (at most one) from the `WEFT_MUTANT` environment
//! variable once at start, and the code at the bug's site asks [`active`].
//!
//! | mutant | where | what goes wrong |
//! |---|---|---|
//! | `ack_before_commit` | orderer Broadcast (proposer) | SUCCESS as soon as the envelope is queued, before Raft commits it |
//! | `no_fsync_on_append` | orderer Raft log append | entries reported durable without fdatasync of the journal |
//! | `retry_window_off` | orderer state machine | the replicated duplicate filter forgets every tx id |
//! | `cut_by_local_clock` | orderer state machine | a node also cuts a block when its own clock says the batch timeout passed, not only on a log entry |
//! | `mvcc_check_skipped` | peer validation | reads are never compared with the current versions |
//! | `gossip_relays_before_verifying` | peer gossip | a block a member pushes is passed on to other members before it is verified |
//!
//! Promises: without the feature nothing of this compiles into the nodes ([`active`] is a
//! constant `false` the optimiser removes); with it, an unknown `WEFT_MUTANT` is an error at
//! start, never a silent no-op.

#[cfg(feature = "mutants")]
use std::sync::OnceLock;

/// The environment variable naming the planted bug.
pub const ENV: &str = "WEFT_MUTANT";

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutant {
    AckBeforeCommit,
    NoFsyncOnAppend,
    RetryWindowOff,
    CutByLocalClock,
    MvccCheckSkipped,
    GossipRelaysBeforeVerifying,
}

impl Mutant {
    pub const ALL: [Mutant; 6] = [
        Mutant::AckBeforeCommit,
        Mutant::NoFsyncOnAppend,
        Mutant::RetryWindowOff,
        Mutant::CutByLocalClock,
        Mutant::MvccCheckSkipped,
        Mutant::GossipRelaysBeforeVerifying,
    ];

    /// Its name in `WEFT_MUTANT` and in mutants.json.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::AckBeforeCommit => "ack_before_commit",
            Mutant::NoFsyncOnAppend => "no_fsync_on_append",
            Mutant::RetryWindowOff => "retry_window_off",
            Mutant::CutByLocalClock => "cut_by_local_clock",
            Mutant::MvccCheckSkipped => "mvcc_check_skipped",
            Mutant::GossipRelaysBeforeVerifying => "gossip_relays_before_verifying",
        }
    }

    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// `WEFT_MUTANT` names no planted bug.
#[derive(Debug, thiserror::Error)]
#[error("{ENV}: {0:?} is not a planted bug (one of: ack_before_commit, no_fsync_on_append, retry_window_off, cut_by_local_clock, mvcc_check_skipped, gossip_relays_before_verifying)")]
pub struct UnknownMutant(pub String);

#[cfg(feature = "mutants")]
static ACTIVE: OnceLock<Option<Mutant>> = OnceLock::new();

/// Reads `WEFT_MUTANT` once (the process start calls it after logging is set up) and logs the
/// bug it switches on. Without the feature a set `WEFT_MUTANT` is refused: the binary has no
/// bugs to plant, and a harness that thinks it does would prove nothing.
pub fn init_from_env() -> Result<Option<Mutant>, UnknownMutant> {
    let chosen = match std::env::var(ENV) {
        Ok(name) if !name.trim().is_empty() => {
            Some(Mutant::from_name(name.trim()).ok_or_else(|| UnknownMutant(name.clone()))?)
        }
        _ => None,
    };
    #[cfg(feature = "mutants")]
    {
        let chosen = *ACTIVE.get_or_init(|| chosen);
        if let Some(m) = chosen {
            tracing::warn!(mutant = m.name(), "planted bug switched on");
        }
        Ok(chosen)
    }
    #[cfg(not(feature = "mutants"))]
    match chosen {
        Some(m) => Err(UnknownMutant(format!(
            "{} (this binary was built without the `mutants` feature)",
            m.name()
        ))),
        None => Ok(None),
    }
}

/// Whether planted bug `m` is switched on in this process.
#[inline]
pub fn active(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.get().copied().flatten() == Some(m)
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_name_round_trips() {
        for m in Mutant::ALL {
            assert_eq!(Mutant::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutant::from_name("ack_after_commit"), None);
    }

    #[test]
    fn nothing_is_active_before_init() {
        for m in Mutant::ALL {
            assert!(!active(m) || cfg!(feature = "mutants"));
        }
    }
}
