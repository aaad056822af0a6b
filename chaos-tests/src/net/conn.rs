//! One proxied connection of a [`Link`]: dial the target when the link lets the forward
//! direction pass, then move bytes both ways, each direction a reader and a writer joined by a
//! bounded queue of timestamped chunks (how [`Mode::Delay`] delays without limiting
//! throughput to one chunk per latency, and keeps the order).
//!
//! Promises:
//! - a held direction neither reads (beyond the one chunk in hand) nor writes, on connections
//!   open before the hold too; a chunk queued before the hold waits as well;
//! - a connection whose sender closes it while held is closed promptly (a node that gave up
//!   during a partition does not pin a connection until the heal);
//! - [`Mode::Reset`] closes both sides with RST at once;
//! - an end of stream from one side is passed on (half close); an error on either side
//!   resets both.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng as _;
use rand::SeedableRng as _;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::io::Interest;
use tokio::net::tcp::ReadHalf;
use tokio::net::tcp::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::Instant;

use super::link::reset;
use super::link::Link;
use super::link::OpenConnection;
use super::link::CHUNKS_QUEUED_MAX;
use super::link::CHUNK_BYTES;
use super::link::CONNECT_TIMEOUT;
use super::mode::Direction;
use super::mode::Mode;

/// How often a held sender with bytes waiting is looked at for a close.
const CLOSE_POLL: Duration = Duration::from_millis(50);

/// How a direction (or a connection) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The sender closed its side and every byte it sent was written.
    Eof,
    /// An error, a sender that closed while held, or the link closed: reset both sides.
    Broken,
}

struct Chunk {
    /// When the writer may write it.
    due: Instant,
    bytes: Vec<u8>,
}

/// Proxies `inbound` until both sides close, either breaks, or the link resets it.
pub(super) async fn run(link: Arc<Link>, mut inbound: TcpStream, seed: u64, _open: OpenConnection) {
    let mut modes = link.mode.subscribe();
    let Some(mut outbound) = dial(&link, &inbound, &mut modes).await else {
        reset(&inbound);
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds: [u64; 2] = [rng.gen(), rng.gen()];
    let ended = {
        let (in_read, in_write) = inbound.split();
        let (out_read, out_write) = outbound.split();
        let forward = direction(&link, in_read, out_write, Direction::Forward, seeds[0]);
        let backward = direction(&link, out_read, in_write, Direction::Backward, seeds[1]);
        let refused = modes.wait_for(|m| m.refuses());
        tokio::pin!(forward, backward, refused);
        let (mut forward_done, mut backward_done) = (false, false);
        loop {
            tokio::select! {
                // A reset, or the link closed (the sender is gone).
                _ = &mut refused => break Ended::Broken,
                e = &mut forward, if !forward_done => match e {
                    Ended::Eof => forward_done = true,
                    Ended::Broken => break Ended::Broken,
                },
                e = &mut backward, if !backward_done => match e {
                    Ended::Eof => backward_done = true,
                    Ended::Broken => break Ended::Broken,
                },
            }
            if forward_done && backward_done {
                break Ended::Eof;
            }
        }
    };
    if ended == Ended::Broken {
        reset(&inbound);
        reset(&outbound);
    }
}

/// Dials the target once the forward direction passes (a SYN into a partition is lost: the
/// target sees nothing until the heal). `None`: reset, link closed, the dialling node gave up
/// meanwhile, or the target did not answer.
async fn dial(
    link: &Link,
    inbound: &TcpStream,
    modes: &mut watch::Receiver<Mode>,
) -> Option<TcpStream> {
    if !passes(inbound, modes, Direction::Forward).await {
        return None;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&link.spec.target)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Waits until `direction` passes. `false` if the link resets or closes first, or if
/// `sender` (whose bytes are held) closes its side meanwhile.
async fn passes(
    sender: &TcpStream,
    modes: &mut watch::Receiver<Mode>,
    direction: Direction,
) -> bool {
    loop {
        let mode = *modes.borrow_and_update();
        if mode.refuses() {
            return false;
        }
        if !mode.holds(direction) {
            return true;
        }
        tokio::select! {
            changed = modes.changed() => if changed.is_err() {
                return false;
            },
            () = closed(sender) => return false,
        }
    }
}

/// Resolves when the peer of `s` closes or resets it, without reading: bytes waiting stay in
/// the socket for the reader. With nothing waiting this sleeps until the socket's next event;
/// with bytes waiting (readable until read) it looks again every [`CLOSE_POLL`], since the
/// close is only reported next to the readiness, which must not be cleared without a read.
async fn closed(s: &TcpStream) {
    loop {
        match s.ready(Interest::READABLE).await {
            Ok(r) if !r.is_read_closed() && !r.is_error() => {
                tokio::time::sleep(CLOSE_POLL).await;
            }
            _ => return,
        }
    }
}

/// One direction: a reader queueing chunks for a writer. Ends when the writer has passed on
/// the sender's end of stream, or at the first error.
async fn direction(
    link: &Link,
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    direction: Direction,
    seed: u64,
) -> Ended {
    let (queue, queued) = mpsc::channel(CHUNKS_QUEUED_MAX);
    let read = read_side(link, &mut from, queue, direction, seed);
    let write = write_side(link, &mut to, queued, direction);
    tokio::pin!(read, write);
    let mut read_done = false;
    loop {
        tokio::select! {
            e = &mut read, if !read_done => match e {
                // The queue's sender is dropped: the writer drains it, then ends.
                Ended::Eof => read_done = true,
                Ended::Broken => return Ended::Broken,
            },
            e = &mut write => return e,
        }
    }
}

async fn read_side(
    link: &Link,
    from: &mut ReadHalf<'_>,
    queue: mpsc::Sender<Chunk>,
    direction: Direction,
    seed: u64,
) -> Ended {
    let mut modes = link.mode.subscribe();
    let mut jitter = Jitter::new(seed);
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ended::Eof,
            Ok(n) => n,
            Err(_) => return Ended::Broken,
        };
        // Held: keep the chunk in hand and stop reading, so the sender's buffers fill.
        if !passes(from.as_ref(), &mut modes, direction).await {
            return Ended::Broken;
        }
        let mode = *modes.borrow();
        let due = jitter.due(Instant::now(), mode, last_due);
        last_due = due;
        let chunk = Chunk {
            due,
            bytes: buf[..n].to_vec(),
        };
        if queue.send(chunk).await.is_err() {
            return Ended::Broken;
        }
    }
}

async fn write_side(
    link: &Link,
    to: &mut WriteHalf<'_>,
    mut queued: mpsc::Receiver<Chunk>,
    direction: Direction,
) -> Ended {
    let mut modes = link.mode.subscribe();
    while let Some(chunk) = queued.recv().await {
        tokio::time::sleep_until(chunk.due).await;
        // A hold set after the chunk was queued stops it too.
        if modes.wait_for(|m| !m.holds(direction)).await.is_err() {
            return Ended::Broken;
        }
        if to.write_all(&chunk.bytes).await.is_err() {
            return Ended::Broken;
        }
        link.carried(direction, chunk.bytes.len());
    }
    // Pass the sender's end of stream on.
    match to.shutdown().await {
        Ok(()) => Ended::Eof,
        Err(_) => Ended::Broken,
    }
}

/// When each chunk of one direction may be written: `latency` + U[0, `jitter`] after it was
/// released, never before the previous chunk (order kept per connection). Jitter comes from a
/// seeded RNG, so the same seed draws the same delays.
#[derive(Debug)]
pub(super) struct Jitter {
    rng: StdRng,
}

impl Jitter {
    pub(super) fn new(seed: u64) -> Self {
        Jitter {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub(super) fn due(&mut self, released: Instant, mode: Mode, previous: Instant) -> Instant {
        let at = match mode.delay() {
            Some((latency, jitter)) => released + latency + self.draw(jitter),
            None => released,
        };
        at.max(previous)
    }

    fn draw(&mut self, jitter: Duration) -> Duration {
        let micros = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.rng.gen_range(0..=micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(latency_ms: u64, jitter_ms: u64) -> Mode {
        Mode::Delay {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    #[test]
    fn jitter_is_the_same_for_the_same_seed_and_within_its_bounds() {
        let t0 = Instant::now();
        let draws = |seed| {
            let mut j = Jitter::new(seed);
            (0..32)
                .map(|_| j.due(t0, delay(10, 5), t0) - t0)
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        for d in &a {
            assert!(
                (Duration::from_millis(10)..=Duration::from_millis(15)).contains(d),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_chunk_is_never_due_before_the_previous_one() {
        let t0 = Instant::now();
        let mut j = Jitter::new(1);
        let previous = t0 + Duration::from_secs(1);
        assert_eq!(j.due(t0, delay(10, 0), previous), previous);
        assert_eq!(j.due(t0, Mode::Pass, previous), previous);
        assert_eq!(j.due(previous, Mode::Pass, t0), previous);
    }
}
