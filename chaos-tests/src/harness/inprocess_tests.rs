#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;
use crate::topology::Topology;

/// Three orderers and one peer, ports 0, fast Raft timings.
fn cluster(dir: &Path) -> Cluster {
    let topology = Topology {
        name: "inproc".into(),
        orderers: 3,
        orgs: 1,
        peers_per_org: 1,
        connected_peers_per_org: 1,
        batch_size: 10,
        batch_timeout_ms: 50,
        base_port: 0,
    };
    let spec = topology.spec_with_ports(&[0; 12]).unwrap();
    Cluster::create(spec, dir, Ports::default(), |c| {
        match c {
            Config::Orderer(c) => {
                test_raft_timings(c);
                c.log.level = "warn".into();
            }
            Config::Peer(c) => c.log.level = "warn".into(),
        }
        Ok(())
    })
    .unwrap()
}

#[test]
fn ports_are_held_from_the_os_until_a_node_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path());
    for n in &c.nodes {
        let a = n.addresses();
        for addr in [&a.service, &a.internal, &a.ops] {
            assert!(!addr.ends_with(":0"), "{addr}");
            assert!(
                std::net::TcpListener::bind(addr.as_str()).is_err(),
                "{addr} free"
            );
        }
    }
    assert_eq!(c.nodes.len(), 4);
    assert_eq!(c.nodes[3].name(), "Org1MSP/peer0");
    assert_eq!(c.nodes[3].kind(), Kind::Peer);
}

#[test]
fn killing_the_leader_elects_another_and_it_restarts_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());
    c.start_all().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let channel = crate::topology::CHANNEL;
    let first = rt
        .block_on(c.wait_leader(channel, Duration::from_secs(30)))
        .unwrap();
    let leader = c.node(&first).unwrap();
    let data_dir = leader.data_dir().to_path_buf();
    leader.kill();
    assert_eq!(leader.state(), State::Stopped);
    assert!(leader.pause().is_err());
    let second = rt
        .block_on(c.wait_leader(channel, Duration::from_secs(30)))
        .unwrap();
    assert_ne!(first, second);
    assert!(data_dir.exists());
    // The killed node comes back on its ports and data dir and follows the new leader.
    c.node(&first).unwrap().start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let knows = c
            .node(&first)
            .unwrap()
            .orderer()
            .and_then(|o| o.registry.get(channel))
            .and_then(|ch| ch.leader());
        if knows.is_some() && c.leader(channel).as_deref() == Some(second.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "{first} never followed {second}");
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    }
    c.stop_all();
    for n in &mut c.nodes {
        assert_eq!(n.state(), State::Stopped);
    }
}
