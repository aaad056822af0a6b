//! The collectors against real nodes, run in this process: one orderer and two peers of two
//! orgs, a few transactions, then every view collected and every check decided.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shared_proto::material;
use shared_proto::pb::tx::TxValidationCode;
use tokio::sync::oneshot;

use super::*;
use crate::topology::nodes;
use crate::topology::Topology;
use crate::topology::CHANNEL;

const DEADLINE: Duration = Duration::from_secs(60);

fn now_unix() -> i64 {
    shared_proto::system_clock()
}

/// Starts every node of `g` in this runtime; dropping the senders stops them.
async fn start(g: &Generated) -> Vec<oneshot::Sender<()>> {
    let mut stops = Vec::new();
    for n in &g.orderers {
        let config = orderer::process::load_config(&n.config).unwrap();
        let listeners = orderer::node::Listeners::bind(&config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(orderer::node::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    for n in &g.peers {
        let config = peer::process::load_config(&n.config).unwrap();
        let chaincodes = peer::process::chaincodes(&config).unwrap();
        let listeners = peer::node::Listeners::bind(&config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(peer::node::run(config, listeners, chaincodes, async move {
            let _ = stopped.await;
        }));
        stops.push(stop);
    }
    stops
}

/// Waits until every node reports `height` on the channel.
async fn wait_height(views: &[NodeView], height: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut at = Vec::new();
        for v in views {
            at.push(crate::workload::height_of(&v.ops).await);
        }
        if at.iter().all(|h| *h == Some(height)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "heights {at:?}, want {height}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_read_every_nodes_chain_codes_state_and_config_and_all_checks_hold() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology {
        name: "collect".into(),
        orderers: 1,
        orgs: 2,
        peers_per_org: 1,
        connected_peers_per_org: 1,
        batch_size: 10,
        batch_timeout_ms: 50,
        base_port: crate::launcher::free_port_range(9).unwrap(),
    };
    let g = material::generate(
        &topology.spec().unwrap(),
        &dir.path().join("net"),
        now_unix(),
    )
    .unwrap();
    let views = nodes(&g);
    let _stops = start(&g).await;

    let history = History::new();
    let gw = peer::sdk::Gateway::from_network(&g, "Org1MSP", "User1", CHANNEL).unwrap();
    let mut last_block = 0;
    for (k, account) in ["a", "b", "c"].iter().enumerate() {
        let t = k as f64;
        let r = gw
            .submit(
                "token",
                "mint",
                &[account.as_bytes().to_vec(), b"10".to_vec()],
            )
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::Valid);
        history.submitted(&r.tx_id, 0, t);
        history.acked(&r.tx_id, "orderer1", t + 0.1);
        history.committed(&r.tx_id, r.block_number, r.code as i32, t + 0.2);
        last_block = last_block.max(r.block_number);
    }
    wait_height(&views, last_block + 1).await;

    let reader = Reader::devnet(&g).unwrap();
    let collected = collect(&reader, &views, DEADLINE).await;
    assert!(
        collected.unreachable.is_empty(),
        "{:?}",
        collected.unreachable
    );
    assert_eq!(collected.orderers.len(), 1);
    assert_eq!(collected.peers.len(), 2);
    assert_eq!(collected.configs.len(), 3);
    let height = last_block + 1;
    assert!(collected.heights().values().all(|h| *h == height));
    for p in &collected.peer_states {
        assert_eq!(p.state_hash.len(), 64, "{p:?}");
        assert_eq!(
            p.codes[1..],
            vec![vec![0]; (height - 1) as usize][..],
            "{p:?}"
        );
    }
    for c in &collected.configs {
        assert_eq!((c.sequence, c.consenters.len()), (0, 1), "{c:?}");
    }
    for check in collected.checks(&history, &Lag::Fails, false) {
        assert!(check.passed, "{}: {}", check.name, check.detail);
    }
    let txs = history.summary(&collected.index());
    assert_eq!(
        (
            txs.submitted,
            txs.acked,
            txs.committed_valid,
            txs.lost_acked
        ),
        (3, 3, 3, 0)
    );

    // A node that cannot be read is reported, and fails no_fork unless it may lag.
    let mut gone = views.clone();
    gone[0].ops = "127.0.0.1:1".into();
    let partial = collect(&reader, &gone, Duration::from_secs(5)).await;
    assert_eq!(partial.unreachable.len(), 1);
    assert!(!partial.checks(&history, &Lag::Fails, false)[0].passed);
    let lag = Lag::AllowedFor(vec!["orderer1".into()]);
    assert!(partial.checks(&history, &lag, false)[0].passed);
}
