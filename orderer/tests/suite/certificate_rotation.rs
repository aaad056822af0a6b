//! Certificate rotation with no outage (fabric #4154: an orderer restarted after renewal never
//! rejoins): a consenter's TLS certificate is replaced by a config update under load, the node
//! restarts with the new certificate and takes part again; no acknowledged envelope is lost
//! and the cluster does not churn through elections.

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use common::*;
use shared_proto::msp::TlsCert;
use shared_proto::msp::TlsCertificateAuthority;
use shared_proto::msp::Validity;

const ADMINS: &[&str] = &["OrdererMSP", "Org1MSP"];

fn term(cluster: &TestCluster, i: usize) -> u64 {
    let ch = cluster.node(i).registry.get(CHANNEL).unwrap();
    let term = ch.raft.metrics().borrow().current_term;
    term
}

/// A renewed certificate from the org's TLS CA (same names, new key).
fn renew(cluster: &TestCluster, target: usize) -> TlsCert {
    let tlsca_dir = cluster.generated.dir.join("orgs/OrdererMSP/tlsca");
    let read = |f: &str| std::fs::read_to_string(tlsca_dir.join(f)).unwrap();
    let ca = TlsCertificateAuthority::from_pem(&read("cert.pem"), &read("key.pem"), "OrdererMSP")
        .unwrap();
    ca.issue(
        &format!("orderer{}", target + 1),
        &["127.0.0.1".into(), "localhost".into()],
        Validity::days_from(now_unix(), 30),
    )
    .unwrap()
}

/// The config update that pins `renewed` in `target`'s consenter entry.
fn replace_certificate(
    cluster: &TestCluster,
    leader: usize,
    target: usize,
    renewed: &TlsCert,
) -> shared_proto::pb::common::Envelope {
    cluster.config_update(leader, ADMINS, |c| {
        let consenter = &mut c.orderer.as_mut().unwrap().consenters[target];
        consenter.client_tls_cert = renewed.cert_der.clone();
        consenter.server_tls_cert = renewed.cert_der.clone();
    })
}

/// The node restarts with the renewed TLS files (as an operator, or cert-manager, would
/// replace them).
fn restart_with(cluster: &mut TestCluster, target: usize, renewed: &TlsCert) {
    let tls = cluster.nodes[target].config.tls.clone();
    std::fs::write(&tls.cert, renewed.cert_pem()).unwrap();
    std::fs::write(&tls.key, renewed.key_pem()).unwrap();
    cluster.stop_node(target).unwrap();
    cluster.start_node(target).unwrap();
}

/// Waits until node `i`'s ops endpoint answers `path` with `code` and a body containing
/// `needle`; returns the body.
async fn wait_ops(
    cluster: &TestCluster,
    i: usize,
    path: &str,
    code: u16,
    needle: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok((c, body)) = cluster.ops_get(i, path).await {
            if c == code && body.contains(needle) {
                return body;
            }
            last = Some((c, body));
        }
        assert!(
            Instant::now() < deadline,
            "node {i} {path} never answered {code} with {needle:?} within {timeout:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rotation done in the wrong order: the node restarts with renewed TLS files before its
/// consenter entry pins them. The other consenters refuse what it sends while nothing else
/// shows it, so its `/readyz` must: 503 naming the mismatch and the fix, until the replace is
/// ordered, then ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_with_a_renewed_certificate_before_the_replace_is_not_ready_and_says_why() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let target = (leader + 1) % 3;
    let readyz = format!("/readyz?channel={CHANNEL}");
    wait_ops(&cluster, target, &readyz, 200, "", Duration::from_secs(30)).await;

    let renewed = renew(&cluster, target);
    restart_with(&mut cluster, target, &renewed);
    let body = wait_ops(
        &cluster,
        target,
        &readyz,
        503,
        "is not the one its consenter entry",
        Duration::from_secs(30),
    )
    .await;
    assert!(body.contains("consenter replace"), "names the fix: {body}");
    let status = wait_ops(
        &cluster,
        target,
        "/status",
        200,
        "not_ready",
        Duration::from_secs(10),
    )
    .await;
    assert!(status.contains("consenter entry"), "{status}");

    let update = replace_certificate(&cluster, leader, target, &renewed);
    cluster.submit_until_ordered(&[leader], &update).await;
    wait_ops(&cluster, target, &readyz, 200, "", Duration::from_secs(60)).await;
    let env = cluster.envelope(b"through the renewed node");
    cluster.submit_until_ordered(&[target], &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consenter_tls_certificate_replaced_under_load_and_node_restarted_with_it_loses_nothing() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .unwrap();
    let target = (leader + 1) % 3;
    let targets = Arc::new(Mutex::new(vec![0, 1, 2]));
    let (stop, acked, load) = common::config::start_load(&cluster, targets.clone());
    let terms_before = (0..3).map(|i| term(&cluster, i)).max().unwrap();

    let renewed = renew(&cluster, target);
    let update = replace_certificate(&cluster, leader, target, &renewed);
    cluster.submit_until_ordered(&[leader], &update).await;
    cluster
        .wait_membership(&[0, 1, 2], &[1, 2, 3], 1, Duration::from_secs(60))
        .await
        .unwrap();

    // The node restarts with the new certificate (as an operator, or cert-manager, would
    // replace the files) and takes part again.
    *targets.lock().unwrap() = vec![leader];
    restart_with(&mut cluster, target, &renewed);
    *targets.lock().unwrap() = vec![0, 1, 2];
    for k in 0..5 {
        let env = cluster.envelope(format!("through the renewed node {k}").as_bytes());
        cluster.submit_until_ordered(&[target], &env).await;
    }
    // The renewed node answers Raft again: the leader hears it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .unwrap();
        let ch = cluster.node(leader).registry.get(CHANNEL).unwrap();
        let bound = orderer::consensus::quorum_silence_max(ch.raft.config());
        if leader == target || ch.liveness.recent(target as u64 + 1, bound) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never heard the renewed node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The load goes on across the rotation: more envelopes acknowledged after the restart.
    let at_restart = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < at_restart + 20 {
        assert!(
            Instant::now() < deadline,
            "the load stalled after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    cluster
        .wait_converged(Duration::from_secs(60))
        .await
        .unwrap();
    let terms_after = (0..3).map(|i| term(&cluster, i)).max().unwrap();
    assert!(
        terms_after <= terms_before + 2,
        "election storm: term {terms_before} -> {terms_after}"
    );
    let blocks = cluster
        .deliver_all(leader, cluster.height(leader) - 1)
        .await
        .unwrap();
    let hashes = verify_chain(&cluster.channel, &blocks).unwrap();
    for i in 0..3 {
        let theirs = cluster.deliver_all(i, cluster.height(i) - 1).await.unwrap();
        assert!(
            verify_chain(&cluster.channel, &theirs).unwrap() == hashes,
            "node {i} differs"
        );
    }
    let counts = tx_counts(&blocks);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20, "only {} acked", acked.len());
    for tx in &acked {
        assert_eq!(counts.get(tx), Some(&1), "acked tx {tx} in the chain once");
    }
}
