//! Submit: each bad envelope refused with its own code and message, replays, then the chain
//! and the ops endpoint (`/healthz`, `/readyz`, `/metrics` counting the refusals).

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::hash;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::Status;
use shared_proto::signing::Domain;
use tonic::Code;

use super::common::*;
use super::{
    assemble, assert_chains, client_of, every_node_orders, expired_org1_client, foreign_ca,
    fresh_validity, not_yet_valid_org1_client, order, runtime, seek, signed, specified,
    submit_valid, tx_id, wait_all_follow_leader, Catalogue, Client, Ledger, ABSOLUTE_MAX, CONVERGE,
    STEP,
};

/// One bad envelope for Submit and what it must get.
#[derive(Debug)]
struct Case {
    name: &'static str,
    envelope: Envelope,
    /// Acceptable codes (one, except where noted).
    codes: Vec<Code>,
    /// Fragments the status message must contain.
    says: Vec<String>,
    /// The in-band status the refusal is counted under in metrics (none when refused by the
    /// transport before the service sees it).
    counted_as: Option<Status>,
}

fn case(name: &'static str, envelope: Envelope, code: Code, says: &[&str]) -> Case {
    let counted_as = Some(match code {
        Code::InvalidArgument => Status::BadRequest,
        Code::PermissionDenied => Status::Forbidden,
        Code::NotFound => Status::NotFound,
        Code::FailedPrecondition => Status::BadRequest,
        Code::AlreadyExists => Status::Conflict,
        _ => Status::Unknown,
    });
    Case {
        name,
        envelope,
        codes: vec![code],
        says: says.iter().map(|s| (*s).to_owned()).collect(),
        counted_as,
    }
}

/// Every bad envelope of the Submit catalogue except the replay (which needs a first
/// submission).
fn submit_catalogue(cluster: &TestCluster) -> Vec<Case> {
    let client = &cluster.client;
    let tx = HeaderType::EndorserTransaction;
    let mut cases = Vec::new();

    // INVALID_ARGUMENT: the envelope is malformed or inconsistent.
    cases.push(case(
        "payload bytes that are not a protobuf Payload -> INVALID_ARGUMENT",
        Envelope {
            payload: vec![0xff; 32],
            signature: vec![7; 64],
        },
        Code::InvalidArgument,
        &["malformed envelope payload"],
    ));
    cases.push(case(
        "empty payload -> INVALID_ARGUMENT",
        Envelope {
            payload: Vec::new(),
            signature: vec![7; 64],
        },
        Code::InvalidArgument,
        &["payload is empty"],
    ));
    let no_header = Payload {
        header: None,
        data: b"headless".to_vec(),
    }
    .encode_to_vec();
    cases.push(case(
        "payload without header -> INVALID_ARGUMENT",
        Envelope {
            signature: client.sign(Domain::Envelope, &[&no_header]),
            payload: no_header,
        },
        Code::InvalidArgument,
        &["no header"],
    ));
    let nonce = envelope::new_nonce();
    let other_nonce = envelope::new_nonce();
    cases.push(case(
        "tx id not matching nonce || creator -> INVALID_ARGUMENT",
        assemble(
            client,
            tx as i32,
            hash::tx_id(&other_nonce, client.serialized()),
            nonce,
            b"wrong tx id",
        ),
        Code::InvalidArgument,
        &["tx id", "nonce"],
    ));
    let short = vec![9u8; 8];
    cases.push(case(
        "nonce shorter than 16 bytes -> INVALID_ARGUMENT",
        assemble(
            client,
            tx as i32,
            hash::tx_id(&short, client.serialized()),
            short,
            b"short nonce",
        ),
        Code::InvalidArgument,
        &["nonce is 8 bytes"],
    ));
    let nonce = envelope::new_nonce();
    cases.push(case(
        "unknown header type 42 -> INVALID_ARGUMENT",
        assemble(
            client,
            42,
            hash::tx_id(&nonce, client.serialized()),
            nonce,
            b"type 42",
        ),
        Code::InvalidArgument,
        &["header type 42"],
    ));
    // Over the channel limit but inside the server's decoding headroom (2 × the limit): refused
    // by the size check with its typed answer.
    for (name, size) in [
        (
            "envelope just over bytes_absolute_max -> INVALID_ARGUMENT",
            ABSOLUTE_MAX + 4096,
        ),
        (
            "envelope of 10.5 MiB -> INVALID_ARGUMENT",
            ABSOLUTE_MAX + ABSOLUTE_MAX / 20,
        ),
    ] {
        let mut oversized = case(
            name,
            cluster.envelope(&vec![b'x'; size]),
            Code::InvalidArgument,
            &[&format!("channel limit is {ABSOLUTE_MAX}")],
        );
        oversized.counted_as = Some(Status::RequestEntityTooLarge);
        cases.push(oversized);
    }
    // Past the transport cap (twice the largest limit a config may set) the frame is refused
    // before the service runs: OUT_OF_RANGE.
    let cap = 2 * shared_proto::channel::BYTES_ABSOLUTE_MAX_CEILING as usize;
    cases.push(Case {
        name: "envelope past twice the limit ceiling -> OUT_OF_RANGE from the transport",
        envelope: cluster.envelope(&vec![b'y'; cap + 1024 * 1024]),
        codes: vec![Code::OutOfRange],
        says: vec!["limit".into()],
        counted_as: None,
    });

    // NOT_FOUND: a channel this orderer does not serve.
    cases.push(case(
        "envelope for a channel this orderer does not serve -> NOT_FOUND",
        signed(client, tx, "otherchannel", b"elsewhere"),
        Code::NotFound,
        &["\"otherchannel\"", "not served"],
    ));

    // PERMISSION_DENIED: the creator or its signature is not acceptable.
    let org9 = client_of(&foreign_ca("Org9MSP"), "Org9MSP", fresh_validity());
    cases.push(case(
        "creator from an unknown org -> PERMISSION_DENIED",
        signed(&org9, tx, CHANNEL, b"from Org9"),
        Code::PermissionDenied,
        &["unknown MSP", "Org9MSP"],
    ));
    let impostor = client_of(&foreign_ca("Org1MSP"), "Org1MSP", fresh_validity());
    cases.push(case(
        "creator claiming Org1MSP with a cert from a foreign CA -> PERMISSION_DENIED",
        signed(&impostor, tx, CHANNEL, b"impostor"),
        Code::PermissionDenied,
        &["not issued by a root CA of Org1MSP"],
    ));
    cases.push(case(
        "creator with an expired certificate -> PERMISSION_DENIED",
        signed(&expired_org1_client(cluster), tx, CHANNEL, b"expired"),
        Code::PermissionDenied,
        &["expired"],
    ));
    cases.push(case(
        "creator with a not yet valid certificate -> PERMISSION_DENIED",
        signed(&not_yet_valid_org1_client(cluster), tx, CHANNEL, b"early"),
        Code::PermissionDenied,
        &["not yet valid"],
    ));
    let mut flipped = cluster.envelope(b"bad signature");
    flipped.signature[10] ^= 0x01;
    cases.push(case(
        "bad signature (one byte flipped) -> PERMISSION_DENIED",
        flipped,
        Code::PermissionDenied,
        &["signature", "does not verify"],
    ));
    let mut unsigned = cluster.envelope(b"missing signature");
    unsigned.signature.clear();
    cases.push(case(
        "missing signature -> PERMISSION_DENIED",
        unsigned,
        Code::PermissionDenied,
        &["does not verify", "signature is 0 bytes"],
    ));
    let mut other_domain = cluster.envelope(b"proposal signature");
    other_domain.signature = client.sign(Domain::Proposal, &[&other_domain.payload]);
    cases.push(case(
        "signature made for another purpose (proposal domain) -> PERMISSION_DENIED",
        other_domain,
        Code::PermissionDenied,
        &["does not verify"],
    ));
    let mut stolen = cluster.envelope(b"signed by someone else");
    let org2 = cluster.generated.user("Org2MSP", "User1").unwrap();
    let org2 = SigningIdentity::from_pem_files("Org2MSP", &org2.cert, &org2.key).unwrap();
    stolen.signature = org2.sign(Domain::Envelope, &[&stolen.payload]);
    cases.push(case(
        "signature by another member than the creator -> PERMISSION_DENIED",
        stolen,
        Code::PermissionDenied,
        &["does not verify"],
    ));
    cases.push(case(
        "creator that is not a Writer (a peer) -> PERMISSION_DENIED",
        signed(&cluster.peer_identity(0), tx, CHANNEL, b"from a peer"),
        Code::PermissionDenied,
        &["Writers"],
    ));
    cases.push(case(
        "creator that is not a Writer (an orderer) -> PERMISSION_DENIED",
        signed(
            &cluster.orderer_identity(0),
            tx,
            CHANNEL,
            b"from an orderer",
        ),
        Code::PermissionDenied,
        &["Writers"],
    ));

    // FAILED_PRECONDITION: well-formed and signed, but not something Broadcast orders.
    cases.push(case(
        "CONFIG envelope -> FAILED_PRECONDITION",
        signed(client, HeaderType::Config, CHANNEL, b"config"),
        Code::FailedPrecondition,
        &["cannot be broadcast"],
    ));
    cases.push(case(
        "CONFIG_UPDATE envelope whose data is not a ConfigUpdate -> INVALID_ARGUMENT",
        signed(client, HeaderType::ConfigUpdate, CHANNEL, b"config update"),
        Code::InvalidArgument,
        &["malformed config update"],
    ));
    cases.push(case(
        "DELIVER_SEEK_INFO envelope sent to Submit -> FAILED_PRECONDITION",
        cluster.seek_envelope(client, seek(specified(0), specified(0), false)),
        Code::FailedPrecondition,
        &["cannot be broadcast"],
    ));
    cases
}

fn heights(cluster: &TestCluster) -> Vec<u64> {
    cluster
        .running()
        .into_iter()
        .map(|i| cluster.height(i))
        .collect()
}

/// Asserts a Submit refusal: the code, the message, no block affected, and the node orders a
/// valid envelope right after.
async fn submit_is_refused(
    cluster: &TestCluster,
    client: &mut Client,
    case: &Case,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    cluster.wait_converged(CONVERGE).await?;
    let before = heights(cluster);
    let mut request = tonic::Request::new(case.envelope.clone());
    request.set_timeout(STEP);
    match client.submit(request).await {
        Ok(r) => anyhow::bail!("accepted: {:?}", r.into_inner()),
        Err(s) => {
            eprintln!("        {:?}: {}", s.code(), s.message());
            anyhow::ensure!(
                case.codes.contains(&s.code()),
                "got {:?} ({:?}), expected one of {:?}",
                s.code(),
                s.message(),
                case.codes
            );
            for fragment in &case.says {
                anyhow::ensure!(
                    s.message().contains(fragment.as_str()),
                    "{:?} message {:?} does not say {fragment:?}",
                    s.code(),
                    s.message()
                );
            }
        }
    }
    anyhow::ensure!(
        heights(cluster) == before,
        "heights moved: {before:?} -> {:?}",
        heights(cluster)
    );
    cluster.wait_converged(CONVERGE).await?;
    anyhow::ensure!(
        heights(cluster) == before,
        "a block was cut after the refusal: {before:?} -> {:?}",
        heights(cluster)
    );
    let body = format!("after: {}", case.name);
    ledger
        .acked
        .insert(submit_valid(client, body.as_bytes(), cluster).await?);
    Ok(())
}

/// Submit, wait for the block, resubmit to every node: ALREADY_EXISTS naming the tx id, and
/// the chain does not move.
async fn replay_after_its_block_is_already_exists(
    cluster: &TestCluster,
    clients: &mut [Client],
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let env = cluster.envelope(b"ordered once");
    let id = tx_id(&env);
    ledger
        .acked
        .insert(order(&mut clients[0], env.clone()).await?);
    for (node, client) in clients.iter_mut().enumerate() {
        // Submit answers after commit; the block is cut after the batch timeout.
        cluster.wait_converged(CONVERGE).await?;
        let before = heights(cluster);
        let s = client
            .submit(env.clone())
            .await
            .err()
            .with_context(|| format!("node {node} accepted the replay"))?;
        anyhow::ensure!(
            s.code() == Code::AlreadyExists,
            "node {node}: {:?} {}",
            s.code(),
            s.message()
        );
        anyhow::ensure!(
            s.message().contains(&id) && s.message().contains("already ordered"),
            "message {:?}",
            s.message()
        );
        ledger.count(node, Status::Conflict);
        cluster.wait_converged(CONVERGE).await?;
        anyhow::ensure!(heights(cluster) == before, "the replay moved the chain");
        let after = submit_valid(client, b"after replay", cluster).await?;
        ledger.acked.insert(after);
    }
    Ok(())
}

/// The same envelope sent to several nodes at once (a client retrying before the first answer):
/// each answer is SUCCESS or ALREADY_EXISTS; the chain check later finds it exactly once.
async fn concurrent_replays_are_ordered_once(
    cluster: &TestCluster,
    clients: &[Client],
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let env = cluster.envelope(b"concurrent replays");
    let answers = futures::future::join_all((0..4).map(|n| {
        let mut c = clients[n % clients.len()].clone();
        let env = env.clone();
        async move { c.submit(env).await }
    }))
    .await;
    let mut ordered = 0;
    for a in answers {
        eprintln!(
            "        {:?}",
            a.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code())
        );
        match a {
            Ok(r) => {
                anyhow::ensure!(r.get_ref().tx_id == tx_id(&env), "{r:?}");
                ordered += 1;
            }
            // Another copy was ordered first.
            Err(s) if s.code() == Code::AlreadyExists => ordered += 1,
            // Retryable (a leader change); the others still count.
            Err(s) if s.code() == Code::Unavailable => {}
            Err(s) => anyhow::bail!("{:?} {}", s.code(), s.message()),
        }
    }
    anyhow::ensure!(ordered >= 1, "no submission was ordered");
    ledger.acked.insert(tx_id(&env));
    Ok(())
}

/// The value of the metric line starting with `name` (labels included), as an integer.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        Some(value as u64)
    })
}

/// `/healthz` 200, `/readyz` 200, `/metrics` with the height and every refusal counted under
/// its in-band status, on every node.
async fn ops_endpoint_reports_health_height_and_refusals(
    cluster: &TestCluster,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let height = cluster.wait_converged(CONVERGE).await?;
    for node in 0..3 {
        let (code, body) = cluster.ops_get(node, "/healthz").await?;
        anyhow::ensure!(code == 200, "node {node} /healthz {code}: {body}");
        let deadline = Instant::now() + CONVERGE;
        loop {
            let (code, body) = cluster.ops_get(node, "/readyz").await?;
            if code == 200 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {node} /readyz {code}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (code, metrics) = cluster.ops_get(node, "/metrics").await?;
        anyhow::ensure!(code == 200, "node {node} /metrics {code}");
        let line = format!("weft_orderer_height{{channel=\"{CHANNEL}\"}}");
        let h = metric(&metrics, &line).with_context(|| format!("node {node}: no {line}"))?;
        anyhow::ensure!(
            h == height,
            "node {node}: {line} {h}, chain height {height}"
        );
        let expected = ledger.counted.get(&node).cloned().unwrap_or_default();
        anyhow::ensure!(
            expected.contains_key("FORBIDDEN"),
            "the test sent node {node} nothing FORBIDDEN"
        );
        for (status, n) in expected.into_iter().chain([("SUCCESS", 1)]) {
            let line = format!("weft_orderer_broadcast_total{{status=\"{status}\"}}");
            let got = metric(&metrics, &line).with_context(|| format!("node {node}: no {line}"))?;
            anyhow::ensure!(got >= n, "node {node}: {line} {got}, expected at least {n}");
        }
    }
    Ok(())
}

#[test]
fn submit_refuses_each_bad_input_with_its_own_code_and_the_cluster_keeps_ordering() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let mut catalogue = Catalogue::default();
    rt.block_on(async {
        wait_all_follow_leader(&cluster).await.unwrap();
        let mut clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
        let mut ledger = Ledger::default();
        catalogue
            .check(
                "every node orders a valid envelope before any bad input",
                every_node_orders(&cluster, &mut clients, &mut ledger, b"warm-up"),
            )
            .await;
        for (k, case) in submit_catalogue(&cluster).into_iter().enumerate() {
            // Spread the refusals over the leader and the followers.
            let node = k % 3;
            ledger.refuse(&case.envelope);
            if let Some(status) = case.counted_as {
                ledger.count(node, status);
            }
            catalogue
                .check(
                    &format!("Submit: {} (node {node})", case.name),
                    submit_is_refused(&cluster, &mut clients[node], &case, &mut ledger),
                )
                .await;
        }
        catalogue
            .check(
                "Submit: replayed tx id, already in a block -> ALREADY_EXISTS",
                replay_after_its_block_is_already_exists(&cluster, &mut clients, &mut ledger),
            )
            .await;
        catalogue
            .check(
                "Submit: one envelope sent 4 times at once -> ordered once",
                concurrent_replays_are_ordered_once(&cluster, &clients, &mut ledger),
            )
            .await;
        catalogue
            .check(
                "after all refusals: every node orders, chains identical, none refused",
                async {
                    every_node_orders(&cluster, &mut clients, &mut ledger, b"final").await?;
                    let height = assert_chains(&cluster, &ledger.acked, &ledger.refused).await?;
                    anyhow::ensure!(height > 1);
                    Ok(())
                },
            )
            .await;
        catalogue
            .check(
                "ops: /healthz, /readyz 200; /metrics has height and counted refusals",
                ops_endpoint_reports_health_height_and_refusals(&cluster, &ledger),
            )
            .await;
    });
    catalogue.finish();
}
