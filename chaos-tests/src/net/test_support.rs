//! Stand-in nodes for the proxy tests: TCP servers on ports from the OS that echo what they
//! receive, count connections and bytes, and can push bytes unasked. Every wait has a
//! deadline; a wait for something that must NOT happen is a negative check of [`HELD`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::broadcast;

/// How long something that must happen may take.
pub const ARRIVES: Duration = Duration::from_secs(5);
/// How long something that must not happen is waited for (negative checks only).
pub const HELD: Duration = Duration::from_millis(300);

/// An echo server.
#[derive(Debug)]
pub struct Server {
    pub addr: String,
    accepted: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    push: broadcast::Sender<Vec<u8>>,
}

impl Server {
    pub async fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (push, _) = broadcast::channel(16);
        let server = Server {
            addr,
            accepted: accepted.clone(),
            received: received.clone(),
            push: push.clone(),
        };
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, received.clone(), push.subscribe()));
            }
        });
        server
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received so far, all connections.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Every open connection writes `bytes` to its client.
    pub fn push(&self, bytes: &[u8]) {
        let _ = self.push.send(bytes.to_vec());
    }
}

async fn serve(
    mut s: TcpStream,
    received: Arc<AtomicU64>,
    mut pushed: broadcast::Receiver<Vec<u8>>,
) {
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                received.fetch_add(n as u64, Ordering::SeqCst);
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            p = pushed.recv() => {
                let Ok(bytes) = p else { return };
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads exactly `n` bytes within `wait`.
pub async fn read_n(s: &mut TcpStream, n: usize, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// Writes `msg` and whether it comes back within `wait` (a negative check when it must not).
pub async fn echoes(s: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    read_n(s, msg.len(), wait).await.as_deref() == Some(msg)
}

/// Whether the proxy closed `s` (end of stream or reset) within `wait`.
pub async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Waits until `cond` holds; fails naming `what` after [`ARRIVES`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + ARRIVES;
    while !cond() {
        assert!(Instant::now() < end, "not within {ARRIVES:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
