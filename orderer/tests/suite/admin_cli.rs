//! `orderer admin`, the real binary, against a running cluster (TLS, port 0), with the
//! cluster's generated material as `--network`:
//!
//! | command                                   | expected                                       |
//! |-------------------------------------------|------------------------------------------------|
//! | `status --json`                           | exactly channel/leader/voters/learners/height/config_sequence, by node name |
//! | `channel list --json`                     | the channel, role consenter                    |
//! | `consenter add --node orderer4`           | 4 voters on every node                         |
//! | `consenter remove --node orderer4`        | back to 3                                      |
//! | `config show --json`, edit, `config update` | sequence + 1 on every node, the edit in force |
//! | the same file again (stale)               | exit 1, the orderer's FAILED_PRECONDITION message |
//! | removing a consenter with one of 3 down   | exit 1, the orderer's quorum message; nothing changes |
//! | `consenter replace`, files unchanged       | exit 1, "nothing to replace"                   |
//! | `consenter add` of a removed node still running | exit 1 at once: it reports role removed; after its restart it is a voter |
//! | `consenter replace` after a TLS renewal    | the new certificate pinned; the node, restarted with it, keeps ordering |

use crate::common;

use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::*;
use shared_proto::material::Generated;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        assert!(self.success, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs `orderer admin --network NETDIR <words>`, killed after 180 s.
fn admin(net: &Path, words: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderer"))
        .arg("admin")
        .arg("--network")
        .arg(net)
        .args(words)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("orderer admin {words:?} still running after 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ orderer admin --network NETDIR {}\n{}{}(exit {})",
        words.join(" "),
        run.stdout,
        run.stderr,
        out.status.code().unwrap_or(-1)
    );
    run
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// The material the cluster generated, checked to load as `--network` does.
fn netdir(cluster: &TestCluster) -> std::path::PathBuf {
    let dir = cluster.generated.dir.clone();
    let loaded = Generated::load(&dir).unwrap();
    assert_eq!(loaded.orderers, cluster.generated.orderers);
    dir
}

#[test]
fn status_and_channel_list_name_the_nodes_and_consenter_add_then_remove_changes_the_voters() {
    let mut cluster = TestCluster::start(ClusterOptions {
        spare_orderers: 1,
        ..Default::default()
    })
    .unwrap();
    let rt = runtime();
    let net = netdir(&cluster);
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30)))
        .unwrap();

    let status = admin(
        &net,
        &[
            "--node",
            "orderer1",
            "status",
            "--channel",
            CHANNEL,
            "--json",
        ],
    )
    .json();
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "channel",
            "config_sequence",
            "height",
            "leader",
            "learners",
            "voters"
        ]
    );
    assert_eq!(status["channel"], CHANNEL);
    assert_eq!(status["leader"], format!("orderer{}", leader + 1));
    assert_eq!(
        names(&status["voters"]),
        ["orderer1", "orderer2", "orderer3"]
    );
    assert!(names(&status["learners"]).is_empty());
    assert_eq!(status["config_sequence"], 0);
    let text = admin(
        &net,
        &["--node", "orderer2", "status", "--channel", CHANNEL],
    );
    assert!(text.success && text.stdout.contains("orderer1, orderer2, orderer3"));

    let list = admin(&net, &["--node", "orderer2", "channel", "list", "--json"]).json();
    let channels = list["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{list}");
    assert_eq!(channels[0]["channel"], CHANNEL);
    assert_eq!(channels[0]["role"], "consenter");

    // orderer4 starts from the genesis block as a follower; the CLI makes it a consenter.
    cluster.start_node(3).unwrap();
    let added = admin(
        &net,
        &[
            "consenter",
            "add",
            "--channel",
            CHANNEL,
            "--node",
            "orderer4",
            "--json",
        ],
    )
    .json();
    assert_eq!(added["config_sequence"], 1);
    assert_eq!(
        names(&added["status"]["voters"]),
        ["orderer1", "orderer2", "orderer3", "orderer4"]
    );
    rt.block_on(cluster.wait_membership(&[0, 1, 2, 3], &[1, 2, 3, 4], 1, Duration::from_secs(60)))
        .unwrap();
    let status = admin(
        &net,
        &[
            "--node",
            "orderer4",
            "status",
            "--channel",
            CHANNEL,
            "--json",
        ],
    )
    .json();
    assert_eq!(names(&status["voters"]).len(), 4, "{status}");

    let removed = admin(
        &net,
        &[
            "consenter",
            "remove",
            "--channel",
            CHANNEL,
            "--node",
            "orderer4",
        ],
    );
    assert!(removed.success, "{}", removed.stderr);
    assert!(removed
        .stdout
        .contains("voters orderer1, orderer2, orderer3;"));
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 2, Duration::from_secs(60)))
        .unwrap();
}

#[test]
fn config_show_round_trips_through_config_update_and_a_stale_update_exits_non_zero_with_the_orderers_message(
) {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let net = netdir(&cluster);
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30)))
        .unwrap();
    let shown = admin(&net, &["config", "show", "--channel", CHANNEL, "--json"]).json();
    assert_eq!(shown["sequence"], 0);
    let mut edited = shown.clone();
    edited["orderer"]["batch_size"]["message_count_max"] = 7.into();
    let file = cluster.dir.path().join("edited.json");
    std::fs::write(&file, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    let file = file.to_str().unwrap();

    let update = admin(
        &net,
        &["config", "update", "--channel", CHANNEL, "--file", file],
    );
    assert!(update.success, "{}", update.stderr);
    assert!(
        update
            .stdout
            .contains("orderer.batch_size.message_count_max: 100 -> 7"),
        "{}",
        update.stdout
    );
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 1, Duration::from_secs(60)))
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            cluster.config_of(i).batch_size().message_count_max,
            7,
            "node {i}"
        );
    }
    // What the orderers now hold is the edited file, one sequence on.
    let mut again = admin(
        &net,
        &[
            "--node",
            "orderer3",
            "config",
            "show",
            "--channel",
            CHANNEL,
            "--json",
        ],
    )
    .json();
    assert_eq!(again["sequence"], 1);
    again["sequence"] = 0.into();
    assert_eq!(again, edited);

    // The same file again builds on sequence 0: stale.
    let stale = admin(
        &net,
        &["config", "update", "--channel", CHANNEL, "--file", file],
    );
    assert!(!stale.success);
    assert!(
        stale.stderr.contains("FAILED_PRECONDITION")
            && stale.stderr.contains("the channel is at sequence 1"),
        "{}",
        stale.stderr
    );
    for i in 0..3 {
        assert_eq!(cluster.config_sequence(i), 1, "node {i}");
    }
}

#[test]
fn consenter_remove_that_would_lose_the_quorum_exits_non_zero_with_the_orderers_message() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let net = netdir(&cluster);
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30)))
        .unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (down, victim) = (others[0], others[1]);
    cluster.stop_node(down).unwrap();
    // Once the leader counts the stopped node as gone, removing a live one would leave one
    // live voter of two.
    {
        let ch = cluster.node(leader).registry.get(CHANNEL).unwrap().clone();
        let bound = orderer::consensus::quorum_silence_max(ch.raft.config());
        let deadline = Instant::now() + Duration::from_secs(30);
        while ch.liveness.recent(down as u64 + 1, bound) {
            assert!(Instant::now() < deadline, "leader still hears node {down}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let victim_name = format!("orderer{}", victim + 1);
    let refused = admin(
        &net,
        &[
            "consenter",
            "remove",
            "--channel",
            CHANNEL,
            "--node",
            &victim_name,
            "--timeout",
            "30",
        ],
    );
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("FAILED_PRECONDITION") && refused.stderr.contains("quorum"),
        "{}",
        refused.stderr
    );
    let running: Vec<usize> = (0..3).filter(|i| *i != down).collect();
    rt.block_on(cluster.wait_membership(&running, &[1, 2, 3], 0, Duration::from_secs(10)))
        .unwrap();
}

/// Issues orderer `i` a new TLS certificate from its org's TLS CA (kept in the material) and
/// writes it over its `tls/` files.
fn renew_tls(cluster: &TestCluster, i: usize) -> Vec<u8> {
    let g = &cluster.generated;
    let node = &g.orderers[i];
    let tlsca_dir = g.dir.join("orgs").join(&node.msp_id).join("tlsca");
    let ca = shared_proto::msp::TlsCertificateAuthority::from_pem(
        &std::fs::read_to_string(tlsca_dir.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(tlsca_dir.join("key.pem")).unwrap(),
        &node.msp_id,
    )
    .unwrap();
    let sans = vec![node.name.clone(), "localhost".into(), "127.0.0.1".into()];
    let validity = shared_proto::msp::Validity::days_from(now_unix(), 30);
    let cert = ca.issue(&node.name, &sans, validity).unwrap();
    std::fs::write(node.dir.join("tls/cert.pem"), cert.cert_pem()).unwrap();
    std::fs::write(node.dir.join("tls/key.pem"), cert.key_pem()).unwrap();
    cert.cert_der.clone()
}

#[test]
fn consenter_replace_pins_a_renewed_tls_certificate_and_the_restarted_node_keeps_ordering() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let net = netdir(&cluster);
    let leader = rt
        .block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30)))
        .unwrap();
    let renewed = (leader + 1) % 3;
    let name = format!("orderer{}", renewed + 1);

    let unchanged = admin(
        &net,
        &[
            "consenter",
            "replace",
            "--channel",
            CHANNEL,
            "--node",
            &name,
        ],
    );
    assert!(!unchanged.success);
    assert!(
        unchanged.stderr.contains("nothing to replace"),
        "{}",
        unchanged.stderr
    );

    let new_cert = renew_tls(&cluster, renewed);
    let replaced = admin(
        &net,
        &[
            "consenter",
            "replace",
            "--channel",
            CHANNEL,
            "--node",
            &name,
        ],
    );
    assert!(replaced.success, "{}", replaced.stderr);
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 1, Duration::from_secs(60)))
        .unwrap();
    for i in 0..3 {
        let config = cluster.config_of(i);
        let pinned = config
            .consenters()
            .iter()
            .find(|c| c.id == renewed as u64 + 1)
            .unwrap();
        assert_eq!(pinned.client_tls_cert, new_cert, "node {i}");
    }
    // The node still presents its old certificate until it restarts with the new files.
    cluster.stop_node(renewed).unwrap();
    cluster.start_node(renewed).unwrap();
    rt.block_on(async {
        let env = cluster.envelope(b"after the certificate replace");
        cluster.submit_until_ordered(&[leader], &env).await;
        cluster
            .wait_converged(Duration::from_secs(60))
            .await
            .unwrap();
    });
    assert_eq!(cluster.height(renewed), cluster.height(leader));
}

#[test]
fn consenter_add_of_a_removed_node_still_running_fails_fast_and_its_restart_completes_the_add() {
    let mut cluster = TestCluster::start(ClusterOptions {
        spare_orderers: 1,
        ..Default::default()
    })
    .unwrap();
    let rt = runtime();
    let net = netdir(&cluster);
    rt.block_on(cluster.wait_membership(&[0, 1, 2], &[1, 2, 3], 0, Duration::from_secs(30)))
        .unwrap();
    cluster.start_node(3).unwrap();
    let change = |verb: &str| {
        admin(
            &net,
            &[
                "consenter",
                verb,
                "--channel",
                CHANNEL,
                "--node",
                "orderer4",
                "--timeout",
                "60",
            ],
        )
    };
    assert!(change("add").success);
    assert!(change("remove").success);
    // orderer4 stops its Raft for the channel once Raft drops it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .node(3)
        .registry
        .get(CHANNEL)
        .unwrap()
        .removed_at()
        .is_none()
    {
        assert!(Instant::now() < deadline, "orderer4 never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let again = change("add");
    assert!(!again.success);
    assert!(
        again.stderr.contains("orderer4 reports role removed") && again.stderr.contains("Restart"),
        "{}",
        again.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30), "not at once");
    // The config names it again (sequence 3); restarted, it catches up and is promoted.
    cluster.stop_node(3).unwrap();
    cluster.start_node(3).unwrap();
    rt.block_on(cluster.wait_membership(&[0, 1, 2, 3], &[1, 2, 3, 4], 3, Duration::from_secs(60)))
        .unwrap();
    let status = admin(
        &net,
        &[
            "--node",
            "orderer4",
            "status",
            "--channel",
            CHANNEL,
            "--json",
        ],
    )
    .json();
    assert_eq!(names(&status["voters"]).len(), 4, "{status}");
}
