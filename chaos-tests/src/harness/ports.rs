//! Ports held for the nodes, so that no other process takes one while a node does not listen
//! on it. Each port is held two ways:
//!
//! - bound: a listener stays open until the node configured with the port first starts;
//! - claimed: an exclusive `flock` on `$TMPDIR/weft-harness-ports/<port>.lock`, held for the
//!   node's whole life in the harness. Every harness process (tests run as parallel processes)
//!   skips claimed ports, so a port stays the node's while it starts, while it is killed or
//!   stopped, and when it restarts. Before the claims, a killed node's free port could be
//!   reserved by another test's cluster, and the node's restart (or its first start, in the
//!   time between exec and bind) failed with "Address already in use" (seen once in each of
//!   three CI runs: consenter_churn peer1, mutants forged_gossip_blocks orderer3, mutants
//!   leader_isolate peer1). The kernel drops a claim when its process dies, however it dies.
//!
//! The ports come from below the kernel's ephemeral range (`ip_local_port_range`): a port
//! bound on port 0 comes from that range, and between the harness releasing it and the node
//! process binding it (the time to exec), the kernel could hand it to an outgoing connection
//! as its local port; the node then fails with "Address already in use" (chaos scenario
//! one_way_loss, seed 1: a peer's listen port taken by a proxy's connection). Below the range
//! only an explicit bind can take a port. Where the range leaves no room, port 0 is used.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;

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

/// Where the claims' lock files live, shared by every harness process of this machine.
fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("weft-harness-ports")
}

/// One port: its listener (until the node starts) and its claim (until the node is dropped).
#[derive(Debug)]
struct Held {
    port: u16,
    listener: Option<TcpListener>,
    _claim: Option<File>,
}

/// Claims `port` (skipped when another holder has it), then binds it.
fn try_hold(port: u16) -> Option<Held> {
    let path = claims_dir().join(format!("{port}.lock"));
    let claim = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    claim.try_lock().ok()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
    Some(Held {
        port,
        listener: Some(listener),
        _claim: Some(claim),
    })
}

/// Ports bound, claimed and held; released when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    held: Vec<Held>,
}

impl Reservation {
    /// Claims and binds `count` ports on 127.0.0.1 and holds them.
    pub fn take(count: usize) -> anyhow::Result<Self> {
        let (low, _) = ephemeral_range();
        let below = low.saturating_sub(FIRST_PORT);
        if usize::from(below) < count * 4 {
            let held = (0..count)
                .map(|_| {
                    let l = TcpListener::bind(("127.0.0.1", 0))?;
                    Ok(Held {
                        port: l.local_addr()?.port(),
                        listener: Some(l),
                        _claim: None,
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()
                .context("binding port 0")?;
            return Ok(Reservation { held });
        }
        std::fs::create_dir_all(claims_dir())
            .with_context(|| format!("creating {}", claims_dir().display()))?;
        // Candidates in an order of their own per process and call, so concurrent harnesses
        // rarely try the same ones; a port someone claims or holds is skipped.
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
            if let Some(h) = try_hold(port) {
                held.push(h);
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
        self.held.iter().map(|h| h.port).collect()
    }

    /// Closes the listeners, so the node can bind its ports; the claims stay.
    pub fn open_for_node(&mut self) {
        for h in &mut self.held {
            h.listener = None;
        }
    }

    /// Splits off the first `count` ports into a reservation of their own.
    pub fn split_off_front(&mut self, count: usize) -> Reservation {
        let rest = self.held.split_off(count.min(self.held.len()));
        Reservation {
            held: std::mem::replace(&mut self.held, rest),
        }
    }
}

/// Who has a socket on `port` (from `/proc/net/tcp` and `tcp6`, owners found by socket inode),
/// one line each, for the report of a node that could not bind it.
pub fn holders(port: u16) -> Vec<String> {
    const STATES: [&str; 12] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            let port_of = |address: &str| {
                address
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(local) == Some(port) {
                let state = usize::from_str_radix(state, 16)
                    .ok()
                    .and_then(|i| STATES.get(i))
                    .unwrap_or(&"?");
                sockets.push((
                    (*inode).to_owned(),
                    format!(
                        "{state} local :{port} remote :{}",
                        port_of(remote).unwrap_or(0)
                    ),
                ));
            }
        }
    }
    sockets
        .into_iter()
        .map(|(inode, what)| format!("{what}, held by {}", socket_owner(&inode)))
        .collect()
}

/// The process holding socket `inode` ("no process" for a socket only the kernel holds, such as
/// one in TIME_WAIT).
fn socket_owner(inode: &str) -> String {
    if inode == "0" {
        return "no process".into();
    }
    let target = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "?".into();
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue; // `self`, `thread-self` and the rest
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            let cmd = std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            return format!("pid {} ({})", p.file_name().to_string_lossy(), cmd.trim());
        }
    }
    "no process found".into()
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

    #[test]
    fn a_port_open_for_its_node_stays_claimed_until_the_reservation_is_dropped() {
        let (low, _) = ephemeral_range();
        if low < FIRST_PORT + 64 {
            return; // port 0 is used: there is nothing to claim
        }
        let mut r = Reservation::take(1).unwrap();
        let port = r.ports()[0];
        assert!(try_hold(port).is_none(), "a held port was handed out again");
        r.open_for_node();
        // The node binds it (as a killed node's restart will) …
        let node = TcpListener::bind(("127.0.0.1", port)).unwrap();
        drop(node);
        // … and while it does not listen, no other reservation takes it.
        assert!(
            try_hold(port).is_none(),
            "a claimed port was handed out again"
        );
        drop(r);
        assert!(try_hold(port).is_some());
    }

    #[test]
    fn the_holder_of_a_port_is_named_by_its_process() {
        let r = Reservation::take(1).unwrap();
        let port = r.ports()[0];
        let found = holders(port);
        let me = format!("pid {} (", std::process::id());
        assert!(
            found
                .iter()
                .any(|h| h.starts_with("LISTEN") && h.contains(&me)),
            "{found:?}"
        );
        drop(r);
        assert!(holders(port).iter().all(|h| !h.starts_with("LISTEN")));
    }
}
