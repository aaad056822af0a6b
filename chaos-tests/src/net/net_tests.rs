//! Fault shapes by node names cut exactly the links they name (echo servers stand in for the
//! nodes, every node dials the others through its own overrides), and heal restores traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use super::test_support::*;
use super::*;
use crate::launcher::Kind;
use crate::topology::NodeView;

fn advertised(node: &str) -> String {
    format!("{node}.weft.invalid:7051")
}

/// A server per node and a cluster link for every ordered pair.
async fn mesh(names: &[&str]) -> (Net, BTreeMap<String, Server>) {
    let mut servers = BTreeMap::new();
    for n in names {
        servers.insert((*n).to_owned(), Server::start().await);
    }
    let mut net = Net::new(42, Handle::current());
    for from in names {
        for to in names.iter().filter(|t| *t != from) {
            net.add(LinkSpec {
                from: (*from).into(),
                to: (*to).into(),
                purpose: Purpose::Cluster,
                advertised: advertised(to),
                target: servers[*to].addr.clone(),
            })
            .unwrap();
        }
    }
    (net, servers)
}

/// A connection from `from` to `to` as `from` would open it: through its override.
async fn dial(net: &Net, from: &str, to: &str) -> TcpStream {
    let o = net
        .overrides(from)
        .into_iter()
        .find(|o| o.from == advertised(to))
        .unwrap();
    TcpStream::connect(o.to).await.unwrap()
}

/// Whether a fresh connection `from` → `to` carries a round trip (negative check with HELD).
async fn talks(net: &Net, from: &str, to: &str, wait: std::time::Duration) -> bool {
    let mut s = dial(net, from, to).await;
    echoes(&mut s, b"hi", wait).await
}

#[tokio::test]
async fn overrides_send_each_node_through_its_own_link_per_advertised_address() {
    let (mut net, servers) = mesh(&["a", "b", "c"]).await;
    let o = net.overrides("a");
    assert_eq!(o.len(), 2);
    for (o, to) in o.iter().zip(["b", "c"]) {
        let link = net.link("a", to, Purpose::Cluster).unwrap();
        assert_eq!(o.from, advertised(to));
        assert_eq!(o.to, link.listen.to_string());
    }
    assert_eq!(net.all_overrides().len(), 3);
    assert!(net.link("a", "a", Purpose::Cluster).is_none());
    let again = net.add(LinkSpec {
        from: "a".into(),
        to: "b".into(),
        purpose: Purpose::Cluster,
        advertised: advertised("b"),
        target: servers["b"].addr.clone(),
    });
    assert!(again.is_err(), "a second a → b cluster link");
}

#[test]
fn cluster_links_follow_who_dials_whom() {
    let view = |name: &str, kind, base: u16| NodeView {
        name: name.into(),
        kind,
        config: PathBuf::new(),
        ops: String::new(),
        ports: vec![base, base + 1, base + 2],
    };
    let nodes = [
        view("orderer1", Kind::Orderer, 100),
        view("orderer2", Kind::Orderer, 200),
        view("Org1MSP/peer0", Kind::Peer, 300),
        view("Org1MSP/peer1", Kind::Peer, 400),
    ];
    let mut got: Vec<(String, String, Purpose, String)> = link_specs(&nodes)
        .into_iter()
        .map(|s| {
            assert_eq!(s.advertised, s.target);
            (s.from, s.to, s.purpose, s.target)
        })
        .collect();
    got.sort();
    let l = |f: &str, t: &str, p, port: u16| (f.into(), t.into(), p, format!("127.0.0.1:{port}"));
    let mut want = vec![
        l("orderer1", "orderer2", Purpose::Client, 200),
        l("orderer1", "orderer2", Purpose::Cluster, 201),
        l("orderer2", "orderer1", Purpose::Client, 100),
        l("orderer2", "orderer1", Purpose::Cluster, 101),
        l("Org1MSP/peer0", "orderer1", Purpose::Client, 100),
        l("Org1MSP/peer0", "orderer2", Purpose::Client, 200),
        l("Org1MSP/peer1", "orderer1", Purpose::Client, 100),
        l("Org1MSP/peer1", "orderer2", Purpose::Client, 200),
        l("Org1MSP/peer0", "Org1MSP/peer1", Purpose::Gossip, 402),
        l("Org1MSP/peer1", "Org1MSP/peer0", Purpose::Gossip, 302),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn link_seeds_depend_on_the_link_not_the_order_links_were_added() {
    let key = |f: &str, t: &str, p| (f.to_owned(), t.to_owned(), p);
    let ab = key("a", "b", Purpose::Cluster);
    assert_eq!(link_seed(1, &ab), link_seed(1, &ab.clone()));
    assert_ne!(link_seed(1, &ab), link_seed(2, &ab));
    assert_ne!(
        link_seed(1, &ab),
        link_seed(1, &key("b", "a", Purpose::Cluster))
    );
    assert_ne!(
        link_seed(1, &ab),
        link_seed(1, &key("a", "b", Purpose::Client))
    );
}

#[tokio::test]
async fn shapes_set_modes_only_on_the_links_they_touch() {
    let (net, _servers) = mesh(&["a", "b", "c"]).await;
    let modes = |net: &Net| -> Vec<(String, Mode)> {
        net.links()
            .map(|l| (format!("{}{}", l.spec.from, l.spec.to), l.mode()))
            .collect()
    };
    let hole = Mode::Blackhole;
    let pass = Mode::Pass;
    let m = |pairs: [(&str, Mode); 6]| -> Vec<(String, Mode)> {
        pairs.iter().map(|(p, m)| ((*p).to_owned(), *m)).collect()
    };
    net.isolate("a");
    assert_eq!(
        modes(&net),
        m([
            ("ab", hole),
            ("ac", hole),
            ("ba", hole),
            ("bc", pass),
            ("ca", hole),
            ("cb", pass)
        ])
    );
    net.heal();
    net.cut_between("a", &["c"]);
    assert_eq!(
        modes(&net),
        m([
            ("ab", pass),
            ("ac", hole),
            ("ba", pass),
            ("bc", pass),
            ("ca", hole),
            ("cb", pass)
        ])
    );
    net.heal();
    net.delay(&["b", "c"], 50, 5);
    let d = Mode::Delay {
        latency: std::time::Duration::from_millis(50),
        jitter: std::time::Duration::from_millis(5),
    };
    assert!(
        modes(&net).iter().all(|(_, mode)| *mode == d),
        "{:?}",
        modes(&net)
    );
    net.reset("c");
    net.allow("c");
    assert_eq!(modes(&net)[0].1, d, "allow c touched a → b");
    assert_eq!(modes(&net)[1].1, pass);
    net.heal();
    assert!(modes(&net).iter().all(|(_, mode)| *mode == pass));
}

#[tokio::test]
async fn split_cuts_only_cross_group_links() {
    let (net, _servers) = mesh(&["a", "b", "c"]).await;
    net.split(&[vec!["a".into()], vec!["b".into(), "c".into()]]);
    // Negative checks: across the split, nothing comes back within HELD.
    assert!(!talks(&net, "a", "b", HELD).await);
    assert!(!talks(&net, "c", "a", HELD).await);
    assert!(talks(&net, "b", "c", ARRIVES).await);
    assert!(talks(&net, "c", "b", ARRIVES).await);
}

#[tokio::test]
async fn bridge_node_sees_both_sides() {
    let (net, _servers) = mesh(&["a", "b", "c"]).await;
    net.bridge(&["a".into()], &["c".into()]);
    for (from, to) in [("b", "a"), ("a", "b"), ("b", "c"), ("c", "b")] {
        assert!(talks(&net, from, to, ARRIVES).await, "{from} → {to}");
    }
    // Negative checks: the sides do not see each other.
    assert!(!talks(&net, "a", "c", HELD).await);
    assert!(!talks(&net, "c", "a", HELD).await);
}

#[tokio::test]
async fn one_way_loss_passes_the_other_direction() {
    let (net, servers) = mesh(&["a", "b"]).await;
    let mut a_to_b = dial(&net, "a", "b").await;
    assert!(echoes(&mut a_to_b, b"0", ARRIVES).await);
    net.one_way("a", "b");
    // On a's connection to b: a's bytes are lost, b's arrive.
    a_to_b.write_all(b"lost").await.unwrap();
    servers["b"].push(b"from b");
    assert_eq!(
        read_n(&mut a_to_b, 6, ARRIVES).await.as_deref(),
        Some(&b"from b"[..])
    );
    assert_eq!(servers["b"].received(), 1, "a's bytes reached b");
    // On b's connection to a: b's request arrives, a's answer is lost (negative check).
    let mut b_to_a = dial(&net, "b", "a").await;
    assert!(!echoes(&mut b_to_a, b"req", HELD).await);
    until("b's request reaches a", || servers["a"].received() == 3).await;
    net.heal();
    until("a's held bytes reach b", || servers["b"].received() == 5).await;
    assert_eq!(
        read_n(&mut b_to_a, 3, ARRIVES).await.as_deref(),
        Some(&b"req"[..])
    );
}

#[tokio::test]
async fn heal_restores_traffic_after_isolate() {
    let (net, servers) = mesh(&["a", "b", "c"]).await;
    let mut open = dial(&net, "b", "a").await;
    assert!(echoes(&mut open, b"before", ARRIVES).await);
    net.isolate("a");
    // Negative checks: nothing to or from a, on open or new connections.
    assert!(!echoes(&mut open, b"during", HELD).await);
    assert!(!talks(&net, "a", "c", HELD).await);
    assert!(
        talks(&net, "b", "c", ARRIVES).await,
        "a link not touching a was cut"
    );
    assert_eq!(servers["a"].received(), 6);
    net.heal();
    assert_eq!(
        read_n(&mut open, 6, ARRIVES).await.as_deref(),
        Some(&b"during"[..])
    );
    assert!(talks(&net, "a", "c", ARRIVES).await);
    assert!(talks(&net, "c", "a", ARRIVES).await);
    assert!(net.bytes_between("b", "a") >= 12);
}
