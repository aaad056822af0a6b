//! Each mode of one link does what its name says on real TCP connections (an echo server
//! stands in for the target), on connections open before the change and on new ones, and
//! going back to `Pass` restores the traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use super::link::CONNECTIONS_MAX;
use super::test_support::*;
use super::*;

async fn link_to(server: &Server) -> Arc<Link> {
    let spec = LinkSpec {
        from: "a".into(),
        to: "b".into(),
        purpose: Purpose::Cluster,
        advertised: "b.weft.invalid:7051".into(),
        target: server.addr.clone(),
    };
    Link::bind(spec, 1, &Handle::current()).unwrap()
}

async fn dial(link: &Link) -> TcpStream {
    TcpStream::connect(link.listen).await.unwrap()
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts_bytes_and_connections() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    assert!(echoes(&mut s, b"hello", ARRIVES).await);
    let stats = link.stats();
    assert_eq!((stats.bytes_forward, stats.bytes_backward), (5, 5));
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
    drop(s);
    until("the closed connection is no longer open", || {
        link.stats().connections_open == 0
    })
    .await;
}

#[tokio::test]
async fn blackhole_link_forwards_nothing_on_open_connections() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    assert!(echoes(&mut s, b"before", ARRIVES).await);
    let before = link.stats();
    link.set(Mode::Blackhole);
    // Negative check: nothing may come back within HELD.
    assert!(!echoes(&mut s, b"during", HELD).await, "bytes came back");
    assert_eq!(server.received(), 6, "the target received held bytes");
    assert_eq!(link.stats().bytes(), before.bytes());
    // Back to Pass: the held bytes flow, in order, and the connection carries new ones.
    link.set(Mode::Pass);
    assert_eq!(
        read_n(&mut s, 6, ARRIVES).await.as_deref(),
        Some(&b"during"[..])
    );
    assert!(echoes(&mut s, b"after", ARRIVES).await);
    assert_eq!(
        link.stats().connections_accepted,
        1,
        "a new connection was needed"
    );
}

#[tokio::test]
async fn blackhole_does_not_dial_the_target_until_healed() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    link.set(Mode::Blackhole);
    let mut s = dial(&link).await;
    // Negative check: the SYN "is lost", so the target sees no connection.
    assert!(!echoes(&mut s, b"syn", HELD).await);
    assert_eq!(
        server.accepted(),
        0,
        "the target was dialled through a blackhole"
    );
    link.set(Mode::Pass);
    assert_eq!(
        read_n(&mut s, 3, ARRIVES).await.as_deref(),
        Some(&b"syn"[..])
    );
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn held_connection_closed_by_its_sender_is_closed_by_the_proxy() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut open_before = dial(&link).await;
    assert!(echoes(&mut open_before, b"x", ARRIVES).await);
    link.set(Mode::Blackhole);
    open_before.write_all(b"held").await.unwrap();
    let not_yet_dialled = dial(&link).await;
    until("both connections are open", || {
        link.stats().connections_open == 2
    })
    .await;
    // The dialling node gives up on both during the partition.
    drop(open_before);
    drop(not_yet_dialled);
    until("the proxy closes both while still blackholed", || {
        link.stats().connections_open == 0
    })
    .await;
    assert_eq!(link.mode(), Mode::Blackhole);
}

#[tokio::test]
async fn one_way_loss_holds_only_its_direction_on_open_connections() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    assert!(echoes(&mut s, b"0", ARRIVES).await);
    // Answers lost: the request reaches the target, the echo is held.
    link.set(Mode::OneWayLoss {
        direction: Direction::Backward,
    });
    assert!(!echoes(&mut s, b"ping", HELD).await, "the answer came back");
    until("the request reached the target", || server.received() == 5).await;
    assert_eq!(link.stats().bytes_backward, 1);
    // Requests lost: what the target sends arrives (first the held echo), requests do not.
    link.set(Mode::OneWayLoss {
        direction: Direction::Forward,
    });
    assert_eq!(
        read_n(&mut s, 4, ARRIVES).await.as_deref(),
        Some(&b"ping"[..])
    );
    server.push(b"push");
    assert_eq!(
        read_n(&mut s, 4, ARRIVES).await.as_deref(),
        Some(&b"push"[..])
    );
    // Negative check: the request is held.
    assert!(!echoes(&mut s, b"lost", HELD).await);
    assert_eq!(server.received(), 5);
    link.set(Mode::Pass);
    assert_eq!(
        read_n(&mut s, 4, ARRIVES).await.as_deref(),
        Some(&b"lost"[..])
    );
}

#[tokio::test]
async fn delay_adds_at_least_latency_and_keeps_order() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    // One chunk per write, so the proxy sees many chunks to keep in order.
    s.set_nodelay(true).unwrap();
    assert!(echoes(&mut s, b"warm", ARRIVES).await);
    let latency = Duration::from_millis(100);
    link.set(Mode::Delay {
        latency,
        jitter: Duration::from_millis(30),
    });
    let start = Instant::now();
    assert!(echoes(&mut s, b"one", ARRIVES).await);
    let round_trip = start.elapsed();
    assert!(round_trip >= 2 * latency, "round trip {round_trip:?}");
    // Many small writes with jitter: all come back in the order written.
    let sent: Vec<u8> = (0..200u8).collect();
    for b in &sent {
        s.write_all(&[*b]).await.unwrap();
    }
    assert_eq!(read_n(&mut s, sent.len(), ARRIVES).await, Some(sent));
    link.set(Mode::Pass);
    assert!(echoes(&mut s, b"fast", ARRIVES).await);
}

#[tokio::test]
async fn reset_closes_open_connections_and_refuses_new_ones_until_pass() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    assert!(echoes(&mut s, b"a", ARRIVES).await);
    link.set(Mode::Reset);
    assert!(closed_within(&mut s, ARRIVES).await, "still open");
    let mut again = dial(&link).await;
    assert!(
        closed_within(&mut again, ARRIVES).await,
        "a new one was kept"
    );
    assert_eq!(
        server.accepted(),
        1,
        "the target was dialled during the reset"
    );
    until("the new one is counted refused", || {
        link.stats().connections_refused == 1
    })
    .await;
    link.set(Mode::Pass);
    let mut healed = dial(&link).await;
    assert!(echoes(&mut healed, b"c", ARRIVES).await);
}

#[tokio::test]
async fn connections_beyond_the_bound_are_refused() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        open.push(dial(&link).await);
    }
    until("every connection is open", || {
        link.stats().connections_open == CONNECTIONS_MAX
    })
    .await;
    let mut one_more = dial(&link).await;
    assert!(closed_within(&mut one_more, ARRIVES).await);
    assert_eq!(link.stats().connections_refused, 1);
    assert!(echoes(&mut open[0], b"still", ARRIVES).await);
}

#[tokio::test]
async fn close_stops_listening_and_resets_connections() {
    let server = Server::start().await;
    let link = link_to(&server).await;
    let mut s = dial(&link).await;
    assert!(echoes(&mut s, b"a", ARRIVES).await);
    link.close();
    assert!(closed_within(&mut s, ARRIVES).await);
    let end = Instant::now() + ARRIVES;
    while TcpStream::connect(link.listen).await.is_ok() {
        assert!(Instant::now() < end, "the port still accepts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
