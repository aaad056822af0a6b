//! Fault shapes by node names: each sets a [`Mode`] on the links it touches. A link has one
//! mode, so the last shape applied to a link wins; [`Net::heal`] passes everything again.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Direction;
use super::LinkSpec;
use super::Mode;
use super::Net;

/// A set of node names: one name (`&str`, `&String`) or several.
pub trait Nodes {
    fn has(&self, name: &str) -> bool;
}

impl Nodes for str {
    fn has(&self, name: &str) -> bool {
        self == name
    }
}

impl Nodes for String {
    fn has(&self, name: &str) -> bool {
        self == name
    }
}

impl Nodes for [String] {
    fn has(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
}

impl Nodes for Vec<String> {
    fn has(&self, name: &str) -> bool {
        self.as_slice().has(name)
    }
}

impl Nodes for [&str] {
    fn has(&self, name: &str) -> bool {
        self.contains(&name)
    }
}

impl<const N: usize> Nodes for [&str; N] {
    fn has(&self, name: &str) -> bool {
        self.contains(&name)
    }
}

impl Nodes for BTreeSet<String> {
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// Whether `l` touches `nodes` (dials from or to one of them).
fn touches(l: &LinkSpec, nodes: &(impl Nodes + ?Sized)) -> bool {
    nodes.has(&l.from) || nodes.has(&l.to)
}

impl Net {
    /// Nothing passes to or from `nodes` (a blackhole: their connections stay open, held).
    pub fn isolate(&self, nodes: &(impl Nodes + ?Sized)) {
        self.set_where(Mode::Blackhole, |l| touches(l, nodes));
    }

    /// Nothing passes between nodes of different groups (e.g. a minority and a majority);
    /// links of nodes in no group are untouched.
    pub fn split(&self, groups: &[Vec<String>]) {
        let group_of = |name: &str| groups.iter().position(|g| g.has(name));
        self.set_where(
            Mode::Blackhole,
            |l| matches!((group_of(&l.from), group_of(&l.to)), (Some(a), Some(b)) if a != b),
        );
    }

    /// Side `a` and side `b` cannot talk; a node on neither side (the bridge) talks to both.
    pub fn bridge(&self, a: &[String], b: &[String]) {
        self.split(&[a.to_vec(), b.to_vec()]);
    }

    /// Nothing passes between any of `a` and any of `b` (links among `a`, among `b`, and to
    /// others untouched).
    pub fn cut_between(&self, a: &(impl Nodes + ?Sized), b: &(impl Nodes + ?Sized)) {
        self.set_where(Mode::Blackhole, |l| {
            (a.has(&l.from) && b.has(&l.to)) || (b.has(&l.from) && a.has(&l.to))
        });
    }

    /// Bytes from `from` to `to` are held, on connections either of them opened; bytes from
    /// `to` to `from` pass. (`from` cannot open new connections to `to`: its SYN is lost.)
    pub fn one_way(&self, from: &str, to: &str) {
        self.set_where(
            Mode::OneWayLoss {
                direction: Direction::Forward,
            },
            |l| l.from == from && l.to == to,
        );
        self.set_where(
            Mode::OneWayLoss {
                direction: Direction::Backward,
            },
            |l| l.from == to && l.to == from,
        );
    }

    /// Every link touching `nodes` delays each chunk by `latency_ms` plus up to `jitter_ms`
    /// (drawn from the seed), each way: a round trip gains at least twice the latency.
    pub fn delay(&self, nodes: &(impl Nodes + ?Sized), latency_ms: u64, jitter_ms: u64) {
        let mode = Mode::Delay {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
        };
        self.set_where(mode, |l| touches(l, nodes));
    }

    /// Resets every connection touching `nodes` and refuses new ones until [`Net::heal`] (or
    /// [`Net::allow`]).
    pub fn reset(&self, nodes: &(impl Nodes + ?Sized)) {
        self.set_where(Mode::Reset, |l| touches(l, nodes));
    }

    /// Lets traffic touching `nodes` pass again.
    pub fn allow(&self, nodes: &(impl Nodes + ?Sized)) {
        self.set_where(Mode::Pass, |l| touches(l, nodes));
    }

    /// Every link passes everything again; held bytes flow, new connections dial at once.
    pub fn heal(&self) {
        self.set_where(Mode::Pass, |_| true);
    }
}
