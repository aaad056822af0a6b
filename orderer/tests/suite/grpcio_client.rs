//! Interoperability: a client on gRPC's C core (Python `grpcio` from PyPI) talks to a real
//! orderer cluster over mutual TLS with the generator's default TLS material, submits envelopes
//! signed as the README says and delivers the blocks holding them
//! (`tests/python/grpcio_client.py`).
//!
//! gRPC's C core offers no Ed25519 in TLS, so this fails at the handshake unless the TLS
//! certificates use a key type it speaks (the generator issues ECDSA P-256 by default).
//! Without python3 or its packages (`grpcio grpcio-tools protobuf cryptography`, which
//! `.ci/run` installs) the test says why and passes without running.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::*;

/// Whether python3 with the client's packages is available; if not, why.
fn python_ready() -> Result<(), String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools, google.protobuf, cryptography",
        ])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 lacks a package (python3 -m pip install grpcio grpcio-tools protobuf cryptography): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the script to completion within `limit`, killing it past that. (exit ok, stdout, stderr)
fn run_script(args: &[String], dir: &Path, limit: Duration) -> (bool, String, String) {
    let stdout = dir.join("client.out");
    let stderr = dir.join("client.err");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpcio_client.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut err = read(&stderr);
    if status.is_none() {
        err.push_str(&format!("\n(killed after {limit:?})"));
    }
    (status.is_some_and(|s| s.success()), read(&stdout), err)
}

#[test]
fn grpcio_client_submits_and_delivers_over_mutual_tls() {
    if let Err(why) = python_ready() {
        eprintln!("SKIPPED grpcio_client_submits_and_delivers_over_mutual_tls: {why}");
        return;
    }
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cluster.wait_for_leader(Duration::from_secs(30)))
        .unwrap();
    let dir = cluster.dir.path();
    let ca = dir.join("tls-ca-bundle.pem");
    std::fs::write(&ca, cluster.tls_ca()).unwrap();
    let user = cluster.generated.user("Org1MSP", "User1").unwrap();
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared-proto/proto");
    let path = |p: &Path| p.display().to_string();
    // A follower, so the envelopes also take the forwarding path.
    let leader = cluster.leader().unwrap_or(0);
    let node = (leader + 1) % 3;
    let args = vec![
        "--addr".into(),
        cluster.client_addr(node),
        "--ca".into(),
        path(&ca),
        "--tls-cert".into(),
        path(&user.tls_cert),
        "--tls-key".into(),
        path(&user.tls_key),
        "--msp-id".into(),
        "Org1MSP".into(),
        "--sign-cert".into(),
        path(&user.cert),
        "--sign-key".into(),
        path(&user.key),
        "--channel".into(),
        CHANNEL.into(),
        "--proto-dir".into(),
        path(&proto_dir),
        "--count".into(),
        "5".into(),
    ];
    let (ok, out, err) = run_script(&args, dir, Duration::from_secs(180));
    eprintln!("--- client stdout\n{out}--- client stderr\n{err}");
    assert!(ok, "the grpcio client failed: {err}");
    let result: serde_json::Value = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .expect("no RESULT line");
    assert_eq!(result["submitted"], 5, "{result}");
    assert_eq!(result["found"], 5, "{result}");
    assert_eq!(result["blocks_in_order"], true, "{result}");
    assert!(result["blocks"].as_u64().unwrap() >= 2, "{result}");
}
