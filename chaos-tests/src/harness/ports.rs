//! Ports from the OS: each is bound on port 0 and held (the listener stays open) until the
//! node that was configured with it starts, so nothing else on the box takes it in between;
//! never a scan of a fixed range.

use std::net::TcpListener;

use anyhow::Context as _;

/// Ports bound and held; released when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<TcpListener>,
}

impl Reservation {
    /// Binds `count` ports on 127.0.0.1 and holds them.
    pub fn take(count: usize) -> anyhow::Result<Self> {
        let held = (0..count)
            .map(|_| TcpListener::bind(("127.0.0.1", 0)))
            .collect::<Result<Vec<_>, _>>()
            .context("binding port 0")?;
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
