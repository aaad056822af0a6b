//! A peer process killed with SIGKILL while it commits blocks under load, twice, then
//! restarted: it converges with its twin (same height, last block hash and state hash), and
//! every transaction the load saw committed VALID is in its ledger exactly once.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::launcher;
use chaos_tests::launcher::NodeProcess;
use chaos_tests::topology::nodes;
use chaos_tests::topology::Topology;
use chaos_tests::topology::CHANNEL;
use peer::sdk::Gateway;
use shared_proto::material;
use shared_proto::pb::tx::TxValidationCode;

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn peer_status(ops: &str) -> Option<(u64, String, String)> {
    let s = launcher::status(ops).await.ok()?;
    let ch = &s["channels"][CHANNEL];
    Some((
        ch["height"].as_u64()?,
        ch["last_block_hash"].as_str()?.to_owned(),
        ch["state_hash"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_commit_under_load_restarts_and_converges_with_its_twin_nothing_lost() {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology {
        name: "peerkill".into(),
        orderers: 1,
        orgs: 2,
        peers_per_org: 2,
        connected_peers_per_org: 2,
        batch_size: 10,
        batch_timeout_ms: 30,
        base_port: launcher::free_port_range(20).unwrap(),
    };
    let generated = material::generate(
        &topology.spec().unwrap(),
        &dir.path().join("net"),
        now_unix(),
    )
    .unwrap();
    let layout = nodes(&generated);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_devnet"));
    let logs = dir.path().join("logs");
    let spawn = |i: usize| {
        let v = &layout[i];
        NodeProcess::spawn(
            exe,
            v.kind,
            &v.name,
            &v.config,
            &logs.join(format!("{}.log", v.name.replace('/', "-"))),
        )
        .unwrap()
    };
    let mut procs: Vec<NodeProcess> = (0..layout.len()).map(spawn).collect();
    launcher::wait_ready(&layout, &mut procs, Duration::from_secs(120))
        .await
        .unwrap();
    // Org1's peers: peer0 endorses for the load; peer1 is the victim, peer0 its twin.
    let twin = layout
        .iter()
        .position(|v| v.name == "Org1MSP/peer0")
        .unwrap();
    let victim = layout
        .iter()
        .position(|v| v.name == "Org1MSP/peer1")
        .unwrap();

    let gw = Arc::new(Gateway::from_network(&generated, "Org1MSP", "User1", CHANNEL).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (gw, stop, acked, failed) = (gw.clone(), stop.clone(), acked.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let account = format!("acct-{c}-{k}").into_bytes();
                k += 1;
                match gw.submit("token", "mint", &[account, b"1".to_vec()]).await {
                    Ok(s) if s.code == TxValidationCode::Valid => {
                        acked.lock().unwrap().insert(s.tx_id);
                    }
                    Ok(s) => {
                        *failed
                            .lock()
                            .unwrap()
                            .entry(format!("{:?}", s.code))
                            .or_default() += 1
                    }
                    Err(e) => *failed.lock().unwrap().entry(e.to_string()).or_default() += 1,
                }
            }
        }));
    }

    // Kill the victim twice while blocks keep arriving, each time once it has committed more.
    for round in 0..2 {
        let (start, _, _) = peer_status(&layout[victim].ops).await.unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (h, _, _) = peer_status(&layout[victim].ops).await.unwrap_or_default();
            if h >= start + 5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "victim stuck at {h} (round {round})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = procs[victim].pid().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while procs[victim].exited().is_none() {
            assert!(Instant::now() < deadline, "SIGKILLed peer still running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("round {round}: victim SIGKILLed at height >= {}", start + 5);
        tokio::time::sleep(Duration::from_millis(500)).await;
        procs[victim] = spawn(victim);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "load: {} committed VALID, failures {:?}",
        acked.len(),
        failed.lock().unwrap()
    );
    assert!(
        acked.len() > 20,
        "the load committed too little to mean anything"
    );

    // The victim converges with its twin.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (height, hash, state) = loop {
        let a = peer_status(&layout[twin].ops).await;
        let b = peer_status(&layout[victim].ops).await;
        if let (Some(a), Some(b)) = (a, b) {
            if a == b {
                break a;
            }
            assert!(Instant::now() < deadline, "twin {a:?} vs victim {b:?}");
        }
        assert!(Instant::now() < deadline, "no status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("converged at height {height}, last block {hash}, state {state}");

    // Every acknowledged transaction is in the victim's ledger once, VALID.
    let victim_addr = format!("127.0.0.1:{}", layout[victim].ports[0]);
    let on_victim = Gateway::from_network_with_endorsers(
        &generated,
        "Org1MSP",
        "User1",
        CHANNEL,
        &[victim_addr],
    )
    .unwrap();
    let mut seen = BTreeMap::<String, usize>::new();
    for n in 1..height {
        let block = on_victim.block_by_number(n).await.unwrap();
        for env in shared_proto::block::tx_envelopes(&block) {
            if let Some(id) = orderer::block_store::tx_id_of(env) {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    for tx in &acked {
        let p = on_victim.transaction_by_id(tx).await.unwrap();
        assert_eq!(p.validation_code, TxValidationCode::Valid as i32, "tx {tx}");
        assert_eq!(
            seen.get(tx),
            Some(&1),
            "tx {tx} not in the victim's chain once"
        );
    }
    assert!(seen.values().all(|c| *c == 1), "a tx is in the chain twice");
}
