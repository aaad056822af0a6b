//! Each fault does what its name says on real TCP connections through the proxies (echo
//! servers stand in for nodes), and heal restores the traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::*;

/// An echo server on a port from the OS; returns its port.
async fn echo() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn orderers(n: usize) -> Vec<NodeView> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(NodeView {
            name: format!("orderer{i}"),
            kind: Kind::Orderer,
            config: Default::default(),
            ops: String::new(),
            ports: vec![echo().await, echo().await, 0],
        });
    }
    out
}

/// The proxy address `from` dials for `to`'s cluster port.
fn via(overrides: &BTreeMap<String, Vec<AddressOverride>>, from: &str, to: &NodeView) -> String {
    let target = format!("127.0.0.1:{}", to.ports[1]);
    overrides[from]
        .iter()
        .find(|o| o.from == target)
        .unwrap()
        .to
        .clone()
}

/// Whether `msg` comes back on `s` within `wait` (a negative check when it must not).
async fn echoes(s: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(wait, s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf == msg
    )
}

const ARRIVES: Duration = Duration::from_secs(5);
/// How long a message that must not arrive is waited for.
const HELD: Duration = Duration::from_millis(300);

#[tokio::test]
async fn isolated_node_links_carry_nothing_on_open_connections_and_heal_delivers_the_held_bytes() {
    let nodes = orderers(3).await;
    let (net, o) = Net::start(&nodes, 1).await.unwrap();
    let mut a = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    let mut c = TcpStream::connect(via(&o, "orderer3", &nodes[1]))
        .await
        .unwrap();
    assert!(echoes(&mut a, b"before", ARRIVES).await);
    net.isolate("orderer1");
    assert!(
        !echoes(&mut a, b"during", HELD).await,
        "isolated link carried bytes"
    );
    assert!(
        echoes(&mut c, b"others", ARRIVES).await,
        "a link not touching it was cut"
    );
    net.heal();
    // The held bytes arrive, then new ones: the connection survived.
    let mut buf = [0u8; 6];
    tokio::time::timeout(ARRIVES, a.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"during");
    assert!(echoes(&mut a, b"after", ARRIVES).await);
}

#[tokio::test]
async fn split_cuts_only_the_links_between_groups() {
    let nodes = orderers(3).await;
    let (net, o) = Net::start(&nodes, 2).await.unwrap();
    net.split(&[
        vec!["orderer1".into()],
        vec!["orderer2".into(), "orderer3".into()],
    ]);
    let mut cross = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    let mut within = TcpStream::connect(via(&o, "orderer3", &nodes[1]))
        .await
        .unwrap();
    assert!(!echoes(&mut cross, b"x", HELD).await);
    assert!(echoes(&mut within, b"y", ARRIVES).await);
}

#[tokio::test]
async fn bridge_node_talks_to_both_sides_that_cannot_talk_to_each_other() {
    let nodes = orderers(3).await;
    let (net, o) = Net::start(&nodes, 3).await.unwrap();
    net.bridge(&["orderer1".into()], &["orderer3".into()]);
    let mut a_c = TcpStream::connect(via(&o, "orderer1", &nodes[2]))
        .await
        .unwrap();
    let mut a_b = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    let mut c_b = TcpStream::connect(via(&o, "orderer3", &nodes[1]))
        .await
        .unwrap();
    assert!(!echoes(&mut a_c, b"x", HELD).await);
    assert!(echoes(&mut a_b, b"y", ARRIVES).await);
    assert!(echoes(&mut c_b, b"z", ARRIVES).await);
}

#[tokio::test]
async fn one_way_loss_holds_one_direction_and_passes_the_other() {
    let nodes = orderers(2).await;
    let (net, o) = Net::start(&nodes, 4).await.unwrap();
    // orderer2 → orderer1 lost: on orderer1's connection to orderer2, requests pass and
    // answers are held.
    net.one_way("orderer2", "orderer1");
    let link = net
        .links()
        .iter()
        .find(|l| {
            l.from == "orderer1"
                && l.to == "orderer2"
                && l.target.ends_with(&nodes[1].ports[1].to_string())
        })
        .unwrap()
        .clone();
    let mut s = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    assert!(!echoes(&mut s, b"ping", HELD).await, "the answer came back");
    let deadline = Instant::now() + ARRIVES;
    while link.bytes().0 < 4 {
        assert!(
            Instant::now() < deadline,
            "the request did not pass: {:?}",
            link.bytes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(link.bytes().1, 0, "bytes from orderer2 passed");
}

#[tokio::test]
async fn reset_closes_open_connections_and_refuses_new_ones_until_healed() {
    let nodes = orderers(2).await;
    let (net, o) = Net::start(&nodes, 5).await.unwrap();
    let mut s = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    assert!(echoes(&mut s, b"a", ARRIVES).await);
    net.reset("orderer2");
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(ARRIVES, s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "still open: {closed:?}");
    let mut again = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    assert!(!echoes(&mut again, b"b", HELD).await);
    net.heal();
    let mut healed = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    assert!(echoes(&mut healed, b"c", ARRIVES).await);
}

#[tokio::test]
async fn delay_adds_at_least_the_latency_each_way_and_keeps_the_order() {
    let nodes = orderers(2).await;
    let (net, o) = Net::start(&nodes, 6).await.unwrap();
    net.delay("orderer2", 100, 20);
    let mut s = TcpStream::connect(via(&o, "orderer1", &nodes[1]))
        .await
        .unwrap();
    let start = Instant::now();
    assert!(echoes(&mut s, b"one", ARRIVES).await);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    s.write_all(b"1").await.unwrap();
    s.write_all(b"2").await.unwrap();
    s.write_all(b"3").await.unwrap();
    let mut buf = [0u8; 3];
    tokio::time::timeout(ARRIVES, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"123");
}
