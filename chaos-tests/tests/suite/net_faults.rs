//! Network faults on real node processes: three orderers (and one peer) dial each other only
//! through the harness's link proxies (`chaos_tests::net`). Isolating the Raft leader gets the
//! other two a new leader that keeps ordering; healing lets the old leader catch up to the
//! same chain and follow the new leader.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::harness::Cluster;
use chaos_tests::harness::Options;
use chaos_tests::launcher::Kind;
use chaos_tests::net::Net;
use chaos_tests::topology::CHANNEL;
use peer::sdk::ClientTls;
use peer::sdk::Gateway;
use shared_proto::msp::SigningIdentity;

const START: Duration = Duration::from_secs(120);
/// Raft election after the leader's links go silent, plus the nodes' own timeouts.
const ELECTION: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(60);

/// (height, last block hash) of orderer `name`'s channel, if it answers.
async fn chain(c: &Cluster, name: &str) -> Option<(u64, String)> {
    let node = c.nodes.iter().find(|n| n.name() == name)?;
    let s = node.status().await.ok()?;
    let ch = &s["channels"][CHANNEL];
    Some((
        ch["height"].as_u64()?,
        ch["last_block_hash"].as_str()?.to_owned(),
    ))
}

/// The leader `name` reports, as an orderer name.
async fn leader_seen_by(c: &Cluster, name: &str) -> Option<String> {
    let node = c.nodes.iter().find(|n| n.name() == name)?;
    let id = node.status().await.ok()?["channels"][CHANNEL]["leader"].as_u64()?;
    c.generated
        .spec
        .orderer_orgs
        .iter()
        .flat_map(|o| &o.orderers)
        .nth(usize::try_from(id).ok()?.checked_sub(1)?)
        .map(|o| o.name.clone())
}

/// Polls `check` until it returns `Some`, failing with `what` after `deadline`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gateway of Org1's User1 that broadcasts only to the orderers named `to`.
fn gateway_to(c: &Cluster, to: &[String]) -> Gateway {
    let g = &c.generated;
    let org = &g.spec.peer_orgs[0];
    let user = g.user(&org.msp_id, "User1").unwrap();
    let identity = SigningIdentity::from_pem_files(&org.msp_id, &user.cert, &user.key).unwrap();
    let tls = ClientTls::from_network(g, &org.msp_id, "User1").unwrap();
    let endorsers = [format!("{}:{}", org.peers[0].host, org.peers[0].port)];
    let orderers: Vec<String> = g
        .spec
        .orderer_orgs
        .iter()
        .flat_map(|o| &o.orderers)
        .filter(|o| to.contains(&o.name))
        .map(|o| format!("{}:{}", o.host, o.port))
        .collect();
    Gateway::new(identity, CHANNEL, &endorsers, &orderers, &tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_catches_up_after_heal() {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        orderers: 3,
        orgs: 1,
        peers_per_org: 1,
        connected_peers_per_org: 1,
        ..Options::default()
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_chaos"));
    let mut cluster = Cluster::create(&options, dir.path(), exe).unwrap();
    let (net, overrides) = Net::start(&cluster.views(), 12).await.unwrap();
    cluster.set_address_overrides(&overrides).unwrap();
    cluster.start_all(START).await.unwrap();
    let old = cluster.wait_leader(CHANNEL, START).await.unwrap();
    let others: Vec<String> = cluster
        .names(Kind::Orderer)
        .into_iter()
        .filter(|n| *n != old)
        .collect();
    // The orderers talk through the proxies, or isolating would prove nothing.
    for o in &others {
        let carried = || {
            let bytes = net.bytes_between(&old, o);
            async move { (bytes > 0).then_some(()) }
        };
        until(
            &format!("Raft traffic {old} → {o} through its link"),
            START,
            carried,
        )
        .await;
    }

    let t0 = Instant::now();
    let (c, old_name, rest) = (&cluster, old.as_str(), others.as_slice());
    net.isolate(&old);
    let new = until(
        "the other two agree on a new leader",
        ELECTION,
        move || async move {
            let a = leader_seen_by(c, &rest[0]).await?;
            let b = leader_seen_by(c, &rest[1]).await?;
            (a == b && a != old_name).then_some(a)
        },
    )
    .await;

    eprintln!("{:?}: {old} isolated; {new} leads", t0.elapsed());
    // The majority keeps ordering; the isolated old leader gets none of it.
    let (stuck, _) = chain(c, old_name).await.unwrap();
    let gateway = gateway_to(&cluster, &others);
    let submits = tokio::spawn(async move {
        for i in 0..3u8 {
            let key = format!("net-faults-{i}").into_bytes();
            let _ = gateway.submit("kv", "put", &[key, vec![i]]).await;
        }
    });
    let majority_ahead = move || async move {
        let a = chain(c, &rest[0]).await?;
        let b = chain(c, &rest[1]).await?;
        (a.0 > stuck && b.0 > stuck).then_some(a)
    };
    let (ahead, _) = until(
        "the majority orders past the isolated leader",
        CATCH_UP,
        majority_ahead,
    )
    .await;
    assert_eq!(
        chain(c, old_name).await.map(|c| c.0),
        Some(stuck),
        "the isolated leader got blocks"
    );

    eprintln!(
        "{:?}: the majority is at height {ahead}, {old} at {stuck}",
        t0.elapsed()
    );
    net.heal();
    let new = new.as_str();
    let caught_up = move || async move {
        let mine = chain(c, old_name).await?;
        let theirs = chain(c, new).await?;
        (mine.0 >= ahead && mine == theirs).then_some(())
    };
    until(
        &format!("{old} catches up to height {ahead} and {new}'s last block"),
        CATCH_UP,
        caught_up,
    )
    .await;
    eprintln!("{:?}: {old} caught up", t0.elapsed());
    let agreed = cluster.wait_leader(CHANNEL, ELECTION).await.unwrap();
    assert_ne!(
        agreed, old,
        "a leader that missed committed blocks won an election"
    );
    submits.abort();
}
