//! Ports held for the nodes: each is bound and held (the listener stays open) until the node
//! configured with it starts, so no other process takes it in between.
//!
//! The ports come from below the kernel's ephemeral range (`ip_local_port_range`): a port
//! bound on port 0 comes from that range, and between the harness releasing it and the node
//! process binding it (the time to exec), the kernel could hand it to an outgoing connection
//! as its local port; the node then fails with "Address already in use" (chaos scenario
//! one_way_loss, seed 1: a peer's listen port taken by a proxy's connection). Below the range
//! only an explicit bind can take a port. Where the range leaves no room, port 0 is used.

use std::net::TcpListener;

use anyhow::Context as _;

/// The lowest port a reservation uses.
const FIRST_PORT: u16 = 10_000;

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// Ports bound and held; released when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<TcpListener>,
}

impl Reservation {
    /// Binds `count` ports on 127.0.0.1 and holds them.
    pub fn take(count: usize) -> anyhow::Result<Self> {
        let (low, _) = ephemeral_range();
        let below = low.saturating_sub(FIRST_PORT);
        if usize::from(below) < count * 4 {
            let held = (0..count)
                .map(|_| TcpListener::bind(("127.0.0.1", 0)))
                .collect::<Result<Vec<_>, _>>()
                .context("binding port 0")?;
            return Ok(Reservation { held });
        }
        // Candidates in an order of their own per process and call, so concurrent harnesses
        // rarely try the same ones; a port someone holds is skipped.
        let mut state = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos().into());
        let mut held = Vec::with_capacity(count);
        for _ in 0..u32::from(below) * 2 {
            if held.len() == count {
                break;
            }
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let port = FIRST_PORT + u16::try_from((state >> 33) % u64::from(below)).unwrap_or(0);
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
            }
        }
        anyhow::ensure!(
            held.len() == count,
            "only {} of {count} ports free between {FIRST_PORT} and {low}",
            held.len()
        );
        Ok(Reservation { held })
    }

    /// The ports held, in the order they were bound.
    pub fn ports(&self) -> Vec<u16> {
        self.held
            .iter()
            .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
            .collect()
    }

    /// Splits off the first `count` ports into a reservation of their own.
    pub fn split_off_front(&mut self, count: usize) -> Reservation {
        let rest = self.held.split_off(count.min(self.held.len()));
        Reservation {
            held: std::mem::replace(&mut self.held, rest),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reserved_ports_lie_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        let r = Reservation::take(16).unwrap();
        let ports = r.ports();
        assert_eq!(ports.len(), 16);
        if low > FIRST_PORT + 64 {
            assert!(
                ports.iter().all(|p| (FIRST_PORT..low).contains(p)),
                "{ports:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 16);
    }

    #[test]
    fn reserved_ports_cannot_be_bound_by_anyone_else_until_released() {
        let mut r = Reservation::take(4).unwrap();
        let ports = r.ports();
        assert_eq!(ports.len(), 4);
        let front = r.split_off_front(1);
        assert_eq!(front.ports(), vec![ports[0]]);
        assert_eq!(r.ports(), ports[1..].to_vec());
        assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_err());
        drop(front);
        assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
        assert!(TcpListener::bind(("127.0.0.1", ports[1])).is_err());
    }
}
