//! What a link does to its traffic ([`Mode`]): pure data, read by every connection of the link
//! each time it moves a chunk, so a change applies to open connections at once.

use std::time::Duration;

/// Which way bytes flow on one of a link's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From the dialling node to the target.
    Forward,
    /// From the target back to the dialling node.
    Backward,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Forward, Direction::Backward];

    pub fn reverse(self) -> Direction {
        match self {
            Direction::Forward => Direction::Backward,
            Direction::Backward => Direction::Forward,
        }
    }
}

/// A link's fault. One per link; setting another replaces it (no stacking).
///
/// | mode         | open connections                          | new connections                    | back to `Pass`                     |
/// |--------------|-------------------------------------------|------------------------------------|------------------------------------|
/// | `Pass`       | bytes flow both ways                      | accepted, target dialled           | -                                  |
/// | `Blackhole`  | no byte moves either way; the proxy stops reading, so senders' socket buffers fill and their writes stall (as when packets are dropped and TCP retransmits) | accepted (the kernel completes the handshake) but the target is not dialled | held bytes flow, in order; a connection whose sender closed it meanwhile was closed by the proxy too |
/// | `Reset`      | closed at once with RST, both sides       | accepted and closed with RST       | accepted and dialled at once       |
/// | `OneWayLoss` | `direction` held as in `Blackhole`, the other flows | dialled unless `Forward` is held | as `Blackhole`              |
/// | `Delay`      | each chunk written `latency` + U[0, `jitter`] after it was read, never before an earlier chunk of its direction | as `Pass` | chunks already queued keep their times |
///
/// Held bytes resume on heal rather than being dropped: TLS runs end to end through the
/// proxy, and TCP would retransmit what a real partition dropped, so a connection that
/// survives a partition carries exactly the bytes it would have carried. Nodes whose own
/// timeouts fired have closed their connections and redial; a link in `Pass` accepts and
/// dials at once, so a heal lets them reconnect promptly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Pass,
    Blackhole,
    Reset,
    OneWayLoss {
        /// The direction whose bytes are held.
        direction: Direction,
    },
    Delay {
        latency: Duration,
        jitter: Duration,
    },
}

impl Mode {
    /// Whether bytes flowing `direction` wait.
    pub fn holds(self, direction: Direction) -> bool {
        match self {
            Mode::Blackhole => true,
            Mode::OneWayLoss { direction: held } => held == direction,
            Mode::Pass | Mode::Reset | Mode::Delay { .. } => false,
        }
    }

    /// Whether connections are closed (open ones and new ones).
    pub fn refuses(self) -> bool {
        self == Mode::Reset
    }

    /// The delay each chunk gets, if any: (latency, jitter).
    pub fn delay(self) -> Option<(Duration, Duration)> {
        match self {
            Mode::Delay { latency, jitter } => Some((latency, jitter)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_holds_exactly_the_directions_its_name_says() {
        let forward_lost = Mode::OneWayLoss {
            direction: Direction::Forward,
        };
        let delay = Mode::Delay {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
        };
        for (mode, held) in [
            (Mode::Pass, [false, false]),
            (Mode::Blackhole, [true, true]),
            (Mode::Reset, [false, false]),
            (forward_lost, [true, false]),
            (delay, [false, false]),
        ] {
            assert_eq!(Direction::BOTH.map(|d| mode.holds(d)), held, "{mode:?}");
            assert_eq!(mode.refuses(), mode == Mode::Reset, "{mode:?}");
        }
        assert_eq!(Direction::Forward.reverse(), Direction::Backward);
    }
}
