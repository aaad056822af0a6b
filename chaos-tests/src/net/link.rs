//! One directed link: a TCP proxy from one node to one listening address of another, with a
//! fault that can be changed while connections are open.
//!
//! TLS runs end to end through it (the proxy sees bytes only). Holding a direction means the
//! proxy stops reading it: the sender's socket buffers fill and its writes stall, as when
//! packets are dropped and TCP retransmits; on heal the held bytes flow again and open
//! connections survive unless the nodes gave up on them. At most one chunk
//! ([`CHUNK_BYTES`]) per direction is held in the proxy.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use rand::Rng as _;
use rand::SeedableRng as _;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Bytes read per chunk.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// How long a connection to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Open connections per link beyond which new ones are refused.
const CONNECTIONS_MAX: usize = 64;

/// What a link does to its traffic. The default passes everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fault {
    /// Bytes from the dialling node to the target are held.
    pub hold_forward: bool,
    /// Bytes from the target back to the dialling node are held.
    pub hold_backward: bool,
    /// Open connections are closed and new ones closed at once.
    pub refuse: bool,
    /// Every chunk waits this long, plus up to `jitter_ms`, before it is written.
    pub delay_ms: u64,
    pub jitter_ms: u64,
}

impl Fault {
    pub const PASS: Fault = Fault {
        hold_forward: false,
        hold_backward: false,
        refuse: false,
        delay_ms: 0,
        jitter_ms: 0,
    };
    pub const HOLD: Fault = Fault {
        hold_forward: true,
        hold_backward: true,
        ..Fault::PASS
    };

    fn holds(&self, forward: bool) -> bool {
        if forward {
            self.hold_forward
        } else {
            self.hold_backward
        }
    }
}

/// A directed link's proxy.
#[derive(Debug)]
pub struct Link {
    /// The dialling node.
    pub from: String,
    /// The node dialled.
    pub to: String,
    /// Where the dialling node connects (its `address_overrides` entry's `to`).
    pub listen: SocketAddr,
    /// The target's real address.
    pub target: String,
    fault: watch::Sender<Fault>,
    /// Bytes carried: [forward, backward].
    bytes: [AtomicU64; 2],
    connections: AtomicU64,
    open: Mutex<Vec<AbortHandle>>,
    seed: u64,
    accept: Mutex<Option<AbortHandle>>,
}

impl Link {
    /// Binds a port from the OS on 127.0.0.1 and starts forwarding to `target`.
    pub async fn start(
        from: &str,
        to: &str,
        target: &str,
        seed: u64,
    ) -> std::io::Result<Arc<Self>> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let (fault, _) = watch::channel(Fault::PASS);
        let link = Arc::new(Link {
            from: from.to_owned(),
            to: to.to_owned(),
            listen: listener.local_addr()?,
            target: target.to_owned(),
            fault,
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            connections: AtomicU64::new(0),
            open: Mutex::default(),
            seed,
            accept: Mutex::default(),
        });
        let task = tokio::spawn(accept_loop(link.clone(), listener));
        *link.accept.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        Ok(link)
    }

    /// Sets the fault; `refuse` also closes every open connection now.
    pub fn set(&self, fault: Fault) {
        if fault.refuse {
            for c in self
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
            {
                c.abort();
            }
        }
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Bytes carried so far: (forward, backward).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes[0].load(Ordering::Relaxed),
            self.bytes[1].load(Ordering::Relaxed),
        )
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub fn close(&self) {
        if let Some(a) = self
            .accept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            a.abort();
        }
        self.set(Fault {
            refuse: true,
            ..Fault::PASS
        });
    }
}

async fn accept_loop(link: Arc<Link>, listener: TcpListener) {
    let mut n = 0u64;
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        link.connections.fetch_add(1, Ordering::Relaxed);
        if link.fault().refuse {
            drop(inbound);
            continue;
        }
        let mut open = link.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|c| !c.is_finished());
        if open.len() >= CONNECTIONS_MAX {
            continue;
        }
        n += 1;
        let task = tokio::spawn(connection(link.clone(), inbound, link.seed ^ n));
        open.push(task.abort_handle());
    }
}

async fn connection(link: Arc<Link>, inbound: TcpStream, seed: u64) {
    let outbound =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&link.target)).await {
            Ok(Ok(s)) => s,
            _ => return,
        };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_r, in_w) = inbound.into_split();
    let (out_r, out_w) = outbound.into_split();
    let forward = pump(link.clone(), in_r, out_w, true, seed);
    let backward = pump(link, out_r, in_w, false, seed.rotate_left(1));
    // Either side closing ends the connection.
    tokio::select! {
        () = forward => {}
        () = backward => {}
    }
}

async fn pump(
    link: Arc<Link>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forward: bool,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut faults = link.fault.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held: wait (with the chunk) until the fault lets this direction pass.
        let fault = match faults.wait_for(|f| !f.holds(forward)).await {
            Ok(f) => *f,
            Err(_) => return,
        };
        if fault.delay_ms > 0 || fault.jitter_ms > 0 {
            let jitter = if fault.jitter_ms > 0 {
                rng.gen_range(0..=fault.jitter_ms)
            } else {
                0
            };
            tokio::time::sleep(Duration::from_millis(fault.delay_ms + jitter)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        link.bytes[usize::from(!forward)].fetch_add(n as u64, Ordering::Relaxed);
    }
}
