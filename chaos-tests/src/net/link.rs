//! One directed link: a TCP proxy from one node to one listening address of another, with a
//! [`Mode`] that can be changed while connections are open, and counters of what it carried.
//!
//! TLS runs end to end through it: the proxy sees bytes only, and the dialling node still
//! verifies the certificate for the host it meant to dial (`advertised`). The listener is bound
//! by the caller or on 127.0.0.1 port 0 and kept for the link's life (never a port scan).
//! Memory per link is bounded: at most [`CONNECTIONS_MAX`] connections, each holding at most
//! one chunk being read plus [`CHUNKS_QUEUED_MAX`] queued chunks per direction.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::conn;
use super::mode::Direction;
use super::mode::Mode;

/// Bytes read per chunk (one `read` call).
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read but not yet written, per direction of a connection: with [`Mode::Delay`] this is
/// the window in flight (16 × 16 KiB per latency), enough for Raft appends and block pulls.
pub const CHUNKS_QUEUED_MAX: usize = 16;
/// Open connections per link beyond which new ones are reset. A node keeps one or two per
/// target; the margin covers redials while old connections wind down.
pub const CONNECTIONS_MAX: u64 = 64;
/// How long dialling the target may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Which of a node's listeners a link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// An orderer's client port (Broadcast, Deliver; peers pull blocks and orderers catch up).
    Client,
    /// An orderer's cluster port (Raft between consenters).
    Cluster,
    /// A peer's gossip port.
    Gossip,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Client => "client",
            Purpose::Cluster => "cluster",
            Purpose::Gossip => "gossip",
        }
    }
}

/// What a link connects: `from` dials `advertised` (what `to` advertises; the address its
/// `address_overrides` entry names) and the proxy dials `target` (where `to` listens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub from: String,
    pub to: String,
    pub purpose: Purpose,
    pub advertised: String,
    pub target: String,
}

/// What a link carried and refused so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes written to the target (from → to).
    pub bytes_forward: u64,
    /// Bytes written back to the dialling node (to → from).
    pub bytes_backward: u64,
    /// Connections the listener accepted, including those it reset at once.
    pub connections_accepted: u64,
    /// Connections reset at accept: [`Mode::Reset`] or [`CONNECTIONS_MAX`] reached.
    pub connections_refused: u64,
    /// Connections being proxied now (held ones included).
    pub connections_open: u64,
}

impl LinkStats {
    pub fn bytes(&self) -> u64 {
        self.bytes_forward + self.bytes_backward
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Indexed by [`direction_index`].
    bytes: [AtomicU64; 2],
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
}

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Forward => 0,
        Direction::Backward => 1,
    }
}

/// A directed link's proxy. Its tasks hold it; [`Link::close`] (or dropping the
/// [`super::Net`] that made it) stops them.
#[derive(Debug)]
pub struct Link {
    pub spec: LinkSpec,
    /// Where the dialling node connects (its `address_overrides` entry's `to`).
    pub listen: SocketAddr,
    pub(super) mode: watch::Sender<Mode>,
    pub(super) counters: Counters,
    /// Connection `n` of this link draws its jitter from a seed derived from this and `n`.
    seed: u64,
    accept: Mutex<Option<AbortHandle>>,
}

impl Link {
    /// Binds 127.0.0.1 port 0 and starts forwarding on `runtime`.
    pub fn bind(spec: LinkSpec, seed: u64, runtime: &Handle) -> std::io::Result<Arc<Link>> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        Link::spawn(spec, listener, seed, runtime)
    }

    /// Starts forwarding what `listener` accepts (bound by the caller, e.g. a port held from
    /// the OS since the node configs were written) on `runtime`. The link's tasks live on that
    /// runtime, so a test can keep its links on a runtime that outlives the nodes it kills.
    pub fn spawn(
        spec: LinkSpec,
        listener: std::net::TcpListener,
        seed: u64,
        runtime: &Handle,
    ) -> std::io::Result<Arc<Link>> {
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let listener = {
            let _in = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (mode, _) = watch::channel(Mode::Pass);
        let link = Arc::new(Link {
            spec,
            listen,
            mode,
            counters: Counters::default(),
            seed,
            accept: Mutex::default(),
        });
        let task = runtime.spawn(accept_loop(link.clone(), listener));
        *link.accept.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Ok(link)
    }

    /// Sets the mode; open connections follow it from their next chunk (see [`Mode`]).
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            bytes_forward: c.bytes[0].load(Ordering::Relaxed),
            bytes_backward: c.bytes[1].load(Ordering::Relaxed),
            connections_accepted: c.accepted.load(Ordering::Relaxed),
            connections_refused: c.refused.load(Ordering::Relaxed),
            connections_open: c.open.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting (the port closes) and resets every open connection.
    pub fn close(&self) {
        if let Some(a) = self
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            a.abort();
        }
        self.set(Mode::Reset);
    }

    pub(super) fn carried(&self, direction: Direction, bytes: usize) {
        self.counters.bytes[direction_index(direction)].fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counts a connection open from accept until its task ends (however it ends).
#[derive(Debug)]
pub(super) struct OpenConnection(Arc<Link>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(link: Arc<Link>, listener: TcpListener) {
    let mut n = 0u64;
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let c = &link.counters;
        c.accepted.fetch_add(1, Ordering::Relaxed);
        if link.mode().refuses() || c.open.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
            c.refused.fetch_add(1, Ordering::Relaxed);
            reset(&inbound);
            continue;
        }
        c.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection(link.clone());
        n += 1;
        tokio::spawn(conn::run(
            link.clone(),
            inbound,
            connection_seed(link.seed, n),
            open,
        ));
    }
}

/// Makes dropping `s` send RST instead of FIN: the peer sees "connection reset".
pub(super) fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Connection `n`'s seed: the same for the same link seed and accept order.
fn connection_seed(link_seed: u64, n: u64) -> u64 {
    super::splitmix64(link_seed ^ super::splitmix64(n))
}
