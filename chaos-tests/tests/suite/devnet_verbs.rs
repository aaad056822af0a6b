//! The dev network's operator verbs against a running `devnet` (the real binary, in a temp
//! dir): `add-orderer` starts one more orderer that outlives the command, serves, and follows
//! the channel without being a consenter; `create-channel` leaves every orderer, the added one
//! included, and every peer serving the new channel; `add-org` makes an org whose TLS CA no
//! running node's files name a member by config update, and its peer pulls the chain,
//! endorses and commits (the nodes' TLS trust follows the channel config); stopping the devnet
//! stops the added nodes too.

use std::io::BufRead as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::launcher;
use chaos_tests::topology::nodes;
use chaos_tests::topology::CHANNEL;
use shared_proto::material::Generated;
use shared_proto::pb::tx::TxValidationCode;

const DEVNET: &str = env!("CARGO_BIN_EXE_devnet");

/// The running `devnet` and whatever its verbs started; all of it is stopped when dropped.
struct Running {
    devnet: Child,
    data_dir: PathBuf,
}

impl Running {
    /// The processes the verbs recorded (`DIR/pids/*.pid`).
    fn recorded_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("pids")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|s| s.lines().next()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Read before the devnet's stop removes the records.
        let recorded = self.recorded_pids();
        // Ctrl-C lets the devnet stop its own nodes and the recorded ones; SIGKILL only for
        // what is left after 30 s.
        if matches!(self.devnet.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.devnet.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.devnet.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.devnet.kill();
        let _ = self.devnet.wait();
        for pid in recorded.into_iter().filter(|p| alive(*p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Starts `devnet` on free ports in `dir` and waits (with a deadline) until it prints that it
/// keeps running.
fn start_devnet(dir: &Path) -> Running {
    let base_port = launcher::free_port_range(20).unwrap();
    let mut devnet = Command::new(DEVNET)
        .arg("--data-dir")
        .arg(dir)
        .args(["--duration", "900", "--orgs", "2", "--peers-per-org", "1"])
        .args(["--workload-seconds", "1", "--clients", "2"])
        .args(["--base-port", &base_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = devnet.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("devnet| {line}");
            // Read on after the test stops listening: the devnet must not write into a
            // closed pipe when it stops.
            let _ = lines_tx.send(line);
        }
    });
    let running = Running {
        devnet,
        data_dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("running for") => return running,
            Ok(_) => {}
            Err(e) => panic!("devnet did not reach 'running for' within 240 s: {e}"),
        }
    }
}

/// Runs a verb against the devnet in `dir`; its output, after asserting it succeeded.
fn verb(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(DEVNET)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "$ devnet --data-dir {} {}\n{stdout}{stderr}",
        dir.display(),
        args.join(" ")
    );
    assert!(out.status.success(), "devnet {args:?} failed: {stderr}");
    stdout
}

/// Polls `ops`'s `/status` until `ok` holds for it, or fails after `secs` with the last one.
async fn wait_status(
    ops: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match launcher::status(ops).await {
            Ok(s) if ok(&s) => return s,
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{ops}: {what} not seen within {secs} s; last /status: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderer_added_to_a_running_devnet_serves_as_a_follower_a_created_channel_reaches_every_node_and_an_added_org_endorses_and_commits(
) {
    let _turn = crate::ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("devnet");
    let mut running = start_devnet(&dir);

    // add-orderer: material, a detached process, the consenter command.
    let out = verb(&dir, &["add-orderer", "--name", "orderer4"]);
    let net = dir.join("net");
    let command = format!(
        "orderer admin --network {} consenter add --channel {CHANNEL} --node orderer4",
        net.display()
    );
    assert!(out.contains(&command), "no consenter command in:\n{out}");
    let generated = Generated::load(&net).unwrap();
    let views = nodes(&generated);
    let added = views.iter().find(|v| v.name == "orderer4").unwrap();
    let status = wait_status(&added.ops, 30, "channel role", |s| {
        s["channels"][CHANNEL]["role"].is_string()
    })
    .await;
    let role = status["channels"][CHANNEL]["role"].as_str().unwrap();
    assert!(
        role == "follower" || role == "onboarding",
        "orderer4's role on {CHANNEL}: {role}"
    );
    let pids = running.recorded_pids();
    assert_eq!(pids.len(), 1, "one recorded process: {pids:?}");
    assert!(alive(pids[0]), "orderer4 outlives the command");
    let orderer4 = pids[0];

    // create-channel: every orderer (orderer4 too) and every peer serves the new channel.
    let out = verb(&dir, &["create-channel", "--id", "second"]);
    assert!(out.contains("second"), "{out}");
    for v in &views {
        wait_status(&v.ops, 30, "channel second", |s| {
            s["channels"]["second"].is_object()
        })
        .await;
    }
    let generated = Generated::load(&net).unwrap();
    assert!(generated.channels.iter().any(|(id, _)| id == "second"));

    // add-org: a new CA no running node was started with; its peer catches up on both
    // channels, endorses (first endorser for its own user, one of three for Org1's) and
    // commits; every peer ends with the same state.
    let out = verb(&dir, &["add-org", "--name", "Org3MSP"]);
    assert!(
        out.contains("config update adding Org3MSP applied"),
        "{out}"
    );
    let generated = Generated::load(&net).unwrap();
    for (org, channel, key) in [
        ("Org3MSP", CHANNEL, "from-org3"),
        ("Org1MSP", CHANNEL, "from-org1"),
        ("Org3MSP", "second", "from-org3"),
    ] {
        let gw = peer::sdk::Gateway::from_network(&generated, org, "User1", channel).unwrap();
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            gw.submit("kv", "put", &[key.as_bytes().to_vec(), b"v".to_vec()]),
        )
        .await
        .unwrap_or_else(|_| panic!("{org}'s submit on {channel} did not complete within 60 s"))
        .unwrap_or_else(|e| panic!("{org}'s submit on {channel}: {e}"));
        assert_eq!(
            done.code,
            TxValidationCode::Valid,
            "{org}'s transaction on {channel}"
        );
    }
    let views = nodes(&generated);
    let peers: Vec<_> = views
        .iter()
        .filter(|v| v.kind == launcher::Kind::Peer)
        .collect();
    assert!(peers.iter().any(|v| v.name == "Org3MSP/peer0"), "{peers:?}");
    let first = wait_status(&peers[0].ops, 30, "a height", |s| {
        s["channels"][CHANNEL]["height"].is_u64()
    })
    .await;
    let mut height = first["channels"][CHANNEL]["height"].as_u64().unwrap();
    let mut hash = first["channels"][CHANNEL]["state_hash"].clone();
    for v in &peers {
        let s = wait_status(&v.ops, 60, "the first peer's height", |s| {
            s["channels"][CHANNEL]["height"].as_u64() >= Some(height)
        })
        .await;
        if s["channels"][CHANNEL]["height"].as_u64() > Some(height) {
            // The first peer was behind: compare against this one from here on.
            height = s["channels"][CHANNEL]["height"].as_u64().unwrap();
            hash = s["channels"][CHANNEL]["state_hash"].clone();
        }
    }
    for v in &peers {
        wait_status(&v.ops, 60, "the same state hash at the same height", |s| {
            s["channels"][CHANNEL]["height"].as_u64() == Some(height)
                && s["channels"][CHANNEL]["state_hash"] == hash
        })
        .await;
    }

    let added = running.recorded_pids();
    assert_eq!(added.len(), 2, "orderer4 and Org3MSP/peer0: {added:?}");

    // Stopping the devnet (Ctrl-C) stops what the verbs started.
    let pid = running.devnet.id();
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.devnet.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "devnet did not stop within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive(orderer4), "the devnet's stop left orderer4 running");
    for pid in added {
        assert!(!alive(pid), "the devnet's stop left process {pid} running");
    }
}
