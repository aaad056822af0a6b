//! Raft messages stay within the transport limit: envelopes near the channel's
//! `bytes_absolute_max` are replicated, however many are in flight at once.

use crate::common;

use std::time::Duration;
use std::time::Instant;

use common::*;
use prost::Message as _;
use tonic::Code;

/// 16 × 9 MiB in flight at once: before the fix one AppendEntries carried up to 12 such
/// entries (> 64 MiB), the transport refused it, and openraft resent the same range forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_9mib_envelopes_are_replicated_and_delivered_by_every_node() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let body = vec![0x5au8; 9 * 1024 * 1024];
    let mut tasks = Vec::new();
    for k in 0..16usize {
        let mut client = cluster.client(k % 3);
        let env = cluster.envelope(&[&body[..], &k.to_be_bytes()].concat());
        assert!(env.encoded_len() > 9 * 1024 * 1024);
        tasks.push(tokio::spawn(async move {
            // A client retries a retryable refusal (no leader yet); the retry filter and the
            // tx index keep the envelope ordered once. Nothing else is retried.
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let mut request = tonic::Request::new(env.clone());
                request.set_timeout(Duration::from_secs(60));
                match client.submit(request).await {
                    Ok(r) => return Ok(r.into_inner().tx_id),
                    Err(s) if s.code() == Code::AlreadyExists => {
                        return Ok(orderer::block_store::tx_id_of(&env.encode_to_vec()).unwrap())
                    }
                    Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(s) => return Err(s),
                }
            }
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(tx_id) => acked.push(tx_id),
            Err(s) => panic!(
                "a 9 MiB envelope was not acked: {:?} {}",
                s.code(),
                s.message()
            ),
        }
    }
    let height = cluster
        .wait_converged(Duration::from_secs(90))
        .await
        .unwrap();
    let mut chains = Vec::new();
    for i in 0..3 {
        let blocks = cluster.deliver_all(i, height - 1).await.unwrap();
        let hashes = verify_chain(&cluster.channel, &blocks).unwrap();
        let counts = tx_counts(&blocks);
        for tx in &acked {
            assert_eq!(
                counts.get(tx),
                Some(&1),
                "node {i}: tx {tx} not delivered once"
            );
        }
        chains.push(hashes);
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "chains differ");
}
