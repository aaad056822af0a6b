//! Workloads and checks shared by the end-to-end and gossip tests.

use std::sync::Arc;
use std::time::Duration;

use peer::sdk::Gateway;
use shared_proto::block;
use shared_proto::pb::tx::TxValidationCode;
use tokio::sync::Semaphore;

use super::TestNet;

pub const WAIT: Duration = Duration::from_secs(120);

pub fn arg(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

pub async fn mint(gw: &Gateway, accounts: usize, amount: u64) {
    for a in 0..accounts {
        let r = gw
            .submit("token", "mint", &[arg(format!("acct{a}")), arg(amount)])
            .await
            .unwrap();
        assert_eq!(r.code, TxValidationCode::Valid, "mint acct{a}");
    }
}

/// Sends `count` transfers between `accounts` accounts from `workers` concurrent clients;
/// returns the codes.
pub async fn transfers(
    gw: Arc<Gateway>,
    count: usize,
    accounts: usize,
    workers: usize,
) -> Vec<Result<TxValidationCode, String>> {
    let limit = Arc::new(Semaphore::new(workers));
    let mut tasks = Vec::new();
    for i in 0..count {
        let (gw, permit) = (gw.clone(), limit.clone().acquire_owned().await.unwrap());
        tasks.push(tokio::spawn(async move {
            let from = format!("acct{}", i % accounts);
            let to = format!("acct{}", (i * 7 + 3) % accounts);
            let to = if to == from {
                format!("acct{}", (i + 1) % accounts)
            } else {
                to
            };
            let r = gw
                .submit("token", "transfer", &[arg(from), arg(to), arg(1 + i % 5)])
                .await;
            drop(permit);
            r.map(|s| s.code).map_err(|e| e.to_string())
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes
}

/// Every running peer holds the orderers' chain (same header hashes), the same validation
/// codes in every block, and the same state hash.
pub async fn assert_peers_agree(net: &TestNet) {
    let height = net.orderer_height();
    net.wait_peers_at(height, WAIT).await.unwrap();
    let running = net.running_peers();
    let reference = net.ledger(running[0]);
    for &i in &running[1..] {
        let other = net.ledger(i);
        assert_eq!(reference.height(), other.height(), "peer {i} height");
        for n in 0..reference.height() {
            let (ba, bb) = (
                reference.block(n).unwrap().unwrap(),
                other.block(n).unwrap().unwrap(),
            );
            assert_eq!(
                block::header_hash(&ba).unwrap(),
                block::header_hash(&bb).unwrap(),
                "peer {i} block {n}"
            );
            assert_eq!(
                block::validation_codes(&ba),
                block::validation_codes(&bb),
                "peer {i} codes of block {n}"
            );
        }
        assert_eq!(
            reference.state_hash().unwrap(),
            other.state_hash().unwrap(),
            "peer {i} state hash differs"
        );
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes (then fails with `what`).
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
