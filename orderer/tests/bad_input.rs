//! Fault catalogue: bad input at every door of the orderer, over real TLS sockets against a
//! 3-node in-process cluster. Each bad input gets its own answer with a message saying what is
//! wrong; the node keeps serving (a valid envelope is ordered right after every refusal),
//! streams stay usable where the protocol allows, no block is affected, and at the end every
//! node holds the same verified chain with every acknowledged envelope exactly once and no
//! refused one.
//!
//! - Submit, INVALID_ARGUMENT: payload not a `Payload`, empty payload, no header, short nonce,
//!   unknown header type, tx id ≠ H(nonce ‖ creator), envelope over `bytes_absolute_max`.
//! - Submit, NOT_FOUND: a channel this orderer does not serve.
//! - Submit, PERMISSION_DENIED: unknown org, foreign CA, expired or not yet valid certificate,
//!   bad, missing, other-purpose or other-signer signature, creator not a Writer.
//! - Submit, FAILED_PRECONDITION: CONFIG, CONFIG_UPDATE, DELIVER_SEEK_INFO envelopes.
//! - Submit, ALREADY_EXISTS: a tx id already in a block.
//! - Broadcast: the same refusals in band (BAD_REQUEST, FORBIDDEN, NOT_FOUND, CONFLICT,
//!   REQUEST_ENTITY_TOO_LARGE), answers in order, the stream stays open.
//! - Deliver: FORBIDDEN, BAD_REQUEST, NOT_FOUND as final statuses, then the same stream serves
//!   the next request.
//! - Cluster: a TLS client that is not a pinned consenter gets PERMISSION_DENIED.
//! - Ops: `/healthz`, `/readyz`, and `/metrics` counting the refusals by status.
//!
//! Checks within one test share its cluster and run in order; a failing check is reported with
//! its name and the others still run, so one run shows every broken entry of the catalogue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use common::*;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::hash;
use shared_proto::msp::CertificateAuthority;
use shared_proto::msp::Role;
use shared_proto::msp::SigningIdentity;
use shared_proto::msp::Usage;
use shared_proto::msp::Validity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::seek_position;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::DeliverResponse;
use shared_proto::pb::orderer::ForwardRequest;
use shared_proto::pb::orderer::RaftRequest;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::orderer::SeekPosition;
use shared_proto::pb::orderer::SeekSpecified;
use shared_proto::signing::Domain;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel as GrpcChannel;
use tonic::Code;

type Client = AtomicBroadcastClient<GrpcChannel>;

const CONVERGE: Duration = Duration::from_secs(30);
/// Longest wait for any one answer.
const STEP: Duration = Duration::from_secs(20);
/// The channel's `bytes_absolute_max` (the generator's default, which the harness keeps).
const ABSOLUTE_MAX: usize = 10 * 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs named checks in order and reports every failure at the end, not just the first.
#[derive(Debug, Default)]
struct Catalogue {
    failures: Vec<String>,
}

impl Catalogue {
    async fn check(&mut self, name: &str, check: impl Future<Output = anyhow::Result<()>>) {
        let started = Instant::now();
        match check.await {
            Ok(()) => eprintln!("ok    {name} ({} ms)", started.elapsed().as_millis()),
            Err(e) => {
                eprintln!("FAIL  {name}: {e:#}");
                self.failures.push(format!("{name}: {e:#}"));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Building bad input.
// ---------------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    now_unix() as u64 * 1000
}

fn tx_id(env: &Envelope) -> String {
    orderer::block_store::tx_id_of(&env.encode_to_vec()).unwrap_or_default()
}

fn signed(
    signer: &SigningIdentity,
    header_type: HeaderType,
    channel: &str,
    data: &[u8],
) -> Envelope {
    envelope::create_signed_envelope(
        signer,
        header_type,
        channel,
        data.to_vec(),
        envelope::new_nonce(),
        now_ms(),
    )
}

/// An envelope from explicit header parts, correctly signed by `signer` over the payload bytes.
fn assemble(
    signer: &SigningIdentity,
    r#type: i32,
    tx_id: String,
    nonce: Vec<u8>,
    data: &[u8],
) -> Envelope {
    let payload = Payload {
        header: Some(Header {
            channel_header: Some(ChannelHeader {
                r#type,
                channel_id: CHANNEL.into(),
                tx_id,
                timestamp_unix_ms: now_ms(),
            }),
            signature_header: Some(SignatureHeader {
                creator: signer.serialized().to_vec(),
                nonce,
            }),
        }),
        data: data.to_vec(),
    }
    .encode_to_vec();
    let signature = signer.sign(Domain::Envelope, &[&payload]);
    Envelope { payload, signature }
}

/// A client identity issued by `ca`, valid during `validity`, claiming membership of `msp_id`.
fn client_of(ca: &CertificateAuthority, msp_id: &str, validity: Validity) -> SigningIdentity {
    let cert = ca
        .issue("mallory", Usage::Signing(Role::Client), &[], validity)
        .unwrap();
    SigningIdentity::new(msp_id, cert.cert_der, cert.key).unwrap()
}

fn fresh_validity() -> Validity {
    Validity::days_from(now_unix(), 1)
}

/// A brand-new CA nobody on the channel knows.
fn foreign_ca(org: &str) -> CertificateAuthority {
    CertificateAuthority::generate(&format!("ca.{org}"), org, fresh_validity()).unwrap()
}

/// Org1's real CA, loaded from the generated material (to issue members it would reject only
/// for their validity window).
fn org1_ca(cluster: &TestCluster) -> CertificateAuthority {
    let dir = cluster.generated.dir.join("orgs/Org1MSP/ca");
    CertificateAuthority::from_pem(
        &std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("key.pem")).unwrap(),
    )
    .unwrap()
}

fn expired_org1_client(cluster: &TestCluster) -> SigningIdentity {
    let now = now_unix();
    let validity = Validity {
        not_before_unix: now - 10 * 86_400,
        not_after_unix: now - 86_400,
    };
    client_of(&org1_ca(cluster), "Org1MSP", validity)
}

fn not_yet_valid_org1_client(cluster: &TestCluster) -> SigningIdentity {
    let now = now_unix();
    let validity = Validity {
        not_before_unix: now + 86_400,
        not_after_unix: now + 10 * 86_400,
    };
    client_of(&org1_ca(cluster), "Org1MSP", validity)
}

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
    // Past the transport cap the frame is refused before the service runs: OUT_OF_RANGE.
    cases.push(Case {
        name: "envelope past twice the limit -> OUT_OF_RANGE from the transport",
        envelope: cluster.envelope(&vec![b'y'; 2 * ABSOLUTE_MAX + 1024 * 1024]),
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
        "CONFIG_UPDATE envelope -> FAILED_PRECONDITION",
        signed(client, HeaderType::ConfigUpdate, CHANNEL, b"config update"),
        Code::FailedPrecondition,
        &["cannot be broadcast"],
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

/// Waits until every node knows the same leader: a follower that has not heard from the
/// leader yet answers UNAVAILABLE (retryable), which is not what these tests are about.
async fn wait_all_follow_leader(cluster: &TestCluster) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<Option<u64>> = cluster
            .running()
            .into_iter()
            .map(|i| cluster.node(i).registry.get(CHANNEL).unwrap().leader())
            .collect();
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| *x == Some(*l)) {
                return Ok(*l as usize - 1);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodes disagree on the leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a valid envelope; it must be ordered. Returns its tx id.
async fn submit_valid(
    client: &mut Client,
    body: &[u8],
    cluster: &TestCluster,
) -> anyhow::Result<String> {
    order(client, cluster.envelope(body)).await
}

/// Submits `env` until it is ordered, retrying while no leader is known (a leader change under
/// load is not what these tests are about). ALREADY_EXISTS on a retry means an earlier attempt
/// was ordered and its answer was lost.
async fn order(client: &mut Client, env: Envelope) -> anyhow::Result<String> {
    let id = tx_id(&env);
    let deadline = Instant::now() + STEP;
    let mut retried = false;
    loop {
        let mut request = tonic::Request::new(env.clone());
        request.set_timeout(STEP);
        match client.submit(request).await {
            Ok(r) => {
                let r = r.into_inner();
                anyhow::ensure!(
                    r.status == Status::Success as i32 && r.tx_id == id,
                    "valid envelope answered {r:?}"
                );
                return Ok(id);
            }
            Err(s) if retried && s.code() == Code::AlreadyExists => return Ok(id),
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && Instant::now() < deadline =>
            {
                retried = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => anyhow::bail!("valid envelope refused: {:?} {}", s.code(), s.message()),
        }
    }
}

/// Every running node delivers the same verified chain; every acked tx is in it once, no
/// refused tx is, and nothing else is. Returns the height.
async fn assert_chains(
    cluster: &TestCluster,
    acked: &BTreeSet<String>,
    refused: &BTreeSet<String>,
) -> anyhow::Result<u64> {
    let height = cluster.wait_converged(CONVERGE).await?;
    let mut reference: Option<Vec<[u8; 32]>> = None;
    for i in cluster.running() {
        let blocks = cluster.deliver_all(i, height - 1).await?;
        anyhow::ensure!(
            blocks.len() as u64 == height,
            "node {i} delivered a short chain"
        );
        let hashes = verify_chain(&cluster.channel, &blocks)?;
        match &reference {
            None => reference = Some(hashes),
            Some(r) => anyhow::ensure!(r == &hashes, "node {i} has a different chain"),
        }
        let counts = tx_counts(&blocks);
        for id in acked {
            let n = counts.get(id).copied().unwrap_or(0);
            anyhow::ensure!(n == 1, "acked tx {id} is {n} times in node {i}'s chain");
        }
        for id in refused {
            anyhow::ensure!(
                !counts.contains_key(id),
                "refused tx {id} is in node {i}'s chain"
            );
        }
        let unexpected: Vec<&String> = counts.keys().filter(|id| !acked.contains(*id)).collect();
        anyhow::ensure!(
            unexpected.is_empty(),
            "node {i}: unacked txs {unexpected:?}"
        );
    }
    Ok(height)
}

/// What one test has sent so far.
#[derive(Debug, Default)]
struct Ledger {
    /// Tx ids answered SUCCESS.
    acked: BTreeSet<String>,
    /// Tx ids of refused envelopes (those that carry one).
    refused: BTreeSet<String>,
    /// node -> in-band status name -> refusals that node answered.
    counted: BTreeMap<usize, BTreeMap<&'static str, u64>>,
}

impl Ledger {
    fn refuse(&mut self, env: &Envelope) {
        let id = tx_id(env);
        if !id.is_empty() {
            self.refused.insert(id);
        }
    }

    fn count(&mut self, node: usize, status: Status) {
        *self
            .counted
            .entry(node)
            .or_default()
            .entry(status.as_str_name())
            .or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Test 1: Submit, one refusal after another, then the chain and the ops endpoint.
// ---------------------------------------------------------------------------------------------

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

async fn every_node_orders(
    cluster: &TestCluster,
    clients: &mut [Client],
    ledger: &mut Ledger,
    body: &[u8],
) -> anyhow::Result<()> {
    for c in clients.iter_mut() {
        ledger.acked.insert(submit_valid(c, body, cluster).await?);
    }
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

// ---------------------------------------------------------------------------------------------
// Test 2: Broadcast and Deliver streams answer refusals in band and stay usable.
// ---------------------------------------------------------------------------------------------

async fn next<T>(stream: &mut tonic::Streaming<T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP, stream.next())
        .await
        .context("no answer in time")?
        .context("stream ended")?
        .map_err(|s| anyhow::anyhow!("stream failed: {:?} {}", s.code(), s.message()))
}

fn expect_response(
    r: &BroadcastResponse,
    status: Status,
    tx: Option<&str>,
    says: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        r.status == status as i32,
        "status {:?} ({:?}), expected {status:?}",
        Status::try_from(r.status),
        r.info
    );
    if let Some(tx) = tx {
        anyhow::ensure!(r.tx_id == tx, "tx id {:?}, expected {tx:?}", r.tx_id);
    }
    anyhow::ensure!(
        r.info.contains(says),
        "info {:?} does not say {says:?}",
        r.info
    );
    Ok(())
}

/// On one Broadcast stream: [valid, bad signature, valid] sent at once are answered SUCCESS,
/// FORBIDDEN, SUCCESS in that order; then, on the same stream, the rest of the in-band column
/// (CONFLICT, REQUEST_ENTITY_TOO_LARGE, NOT_FOUND, BAD_REQUEST, FORBIDDEN) and a SUCCESS; when
/// the client closes its side the stream ends cleanly.
async fn broadcast_stream_answers_refusals_in_band_and_stays_open(
    cluster: &TestCluster,
    node: usize,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let (tx, rx) = mpsc::channel::<Envelope>(16);
    let first = cluster.envelope(b"stream: valid 1");
    let mut bad = cluster.envelope(b"stream: bad signature");
    bad.signature[3] ^= 0x80;
    let third = cluster.envelope(b"stream: valid 2");
    ledger.refuse(&bad);
    for e in [first.clone(), bad, third.clone()] {
        tx.send(e).await?;
    }
    let mut responses = cluster
        .client(node)
        .broadcast(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let r = next(&mut responses).await?;
    expect_response(&r, Status::Success, Some(&tx_id(&first)), "")?;
    ledger.acked.insert(tx_id(&first));
    let r = next(&mut responses).await?;
    expect_response(&r, Status::Forbidden, Some(""), "does not verify")?;
    ledger.count(node, Status::Forbidden);
    let r = next(&mut responses).await?;
    expect_response(&r, Status::Success, Some(&tx_id(&third)), "")?;
    ledger.acked.insert(tx_id(&third));

    // Once the first envelope is in a block, replaying it is a CONFLICT.
    cluster.wait_converged(CONVERGE).await?;
    let tx_type = HeaderType::EndorserTransaction;
    let peer = cluster.peer_identity(1);
    let malformed = Envelope {
        payload: vec![0xff; 8],
        signature: Vec::new(),
    };
    let last = cluster.envelope(b"stream: valid 3");
    let more = [
        (first.clone(), Status::Conflict, "already ordered"),
        (
            cluster.envelope(&vec![b'x'; ABSOLUTE_MAX + 4096]),
            Status::RequestEntityTooLarge,
            "channel limit",
        ),
        (
            signed(client, tx_type, "otherchannel", b"x"),
            Status::NotFound,
            "not served",
        ),
        (
            signed(client, HeaderType::Config, CHANNEL, b"config"),
            Status::BadRequest,
            "cannot be broadcast",
        ),
        (malformed, Status::BadRequest, "malformed"),
        (
            signed(&peer, tx_type, CHANNEL, b"from a peer"),
            Status::Forbidden,
            "Writers",
        ),
        (last.clone(), Status::Success, ""),
    ];
    for (e, status, _) in &more {
        if *status != Status::Success && *status != Status::Conflict {
            ledger.refuse(e);
            ledger.count(node, *status);
        }
        tx.send(e.clone()).await?;
    }
    for (n, (e, status, says)) in more.iter().enumerate() {
        let r = next(&mut responses).await?;
        let tx = (*status == Status::Success).then(|| tx_id(e));
        expect_response(&r, *status, tx.as_deref(), says)
            .with_context(|| format!("answer {} on the stream", n + 4))?;
    }
    ledger.acked.insert(tx_id(&last));
    drop(tx);
    let end = tokio::time::timeout(STEP, responses.next())
        .await
        .context("the stream did not end after the client closed its side")?;
    anyhow::ensure!(end.is_none(), "after the client closed: {end:?}");
    Ok(())
}

fn specified(number: u64) -> Option<SeekPosition> {
    Some(SeekPosition {
        r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
    })
}

fn seek(
    start: Option<SeekPosition>,
    stop: Option<SeekPosition>,
    fail_if_not_ready: bool,
) -> SeekInfo {
    SeekInfo {
        start,
        stop,
        behavior: if fail_if_not_ready {
            SeekBehavior::FailIfNotReady as i32
        } else {
            SeekBehavior::BlockUntilReady as i32
        },
    }
}

/// Reads Deliver answers up to and including the final status.
async fn until_status(
    stream: &mut tonic::Streaming<DeliverResponse>,
) -> anyhow::Result<(Vec<Block>, Status)> {
    let mut blocks = Vec::new();
    loop {
        match next(stream).await?.r#type {
            Some(Type::Block(b)) => blocks.push(b),
            Some(Type::Status(s)) => {
                let status =
                    Status::try_from(s).map_err(|e| anyhow::anyhow!("status {s}: {e:?}"))?;
                return Ok((blocks, status));
            }
            None => anyhow::bail!("empty deliver response"),
        }
    }
}

/// One Deliver request on an open stream and what it must get.
struct Step {
    what: &'static str,
    request: Envelope,
    status: Status,
    blocks: std::ops::Range<u64>,
}

/// Sends one request on an open Deliver stream and checks the blocks and the final status.
async fn deliver_step(
    requests: &mpsc::Sender<Envelope>,
    stream: &mut tonic::Streaming<DeliverResponse>,
    step: Step,
) -> anyhow::Result<Vec<Block>> {
    requests
        .send(step.request)
        .await
        .context("request stream closed")?;
    let (got, status) = until_status(stream).await?;
    anyhow::ensure!(
        status == step.status,
        "final status {status:?}, expected {:?}",
        step.status
    );
    let numbers: Vec<u64> = got
        .iter()
        .map(|b| b.header.as_ref().map_or(u64::MAX, |h| h.number))
        .collect();
    let expected: Vec<u64> = step.blocks.clone().collect();
    anyhow::ensure!(
        numbers == expected,
        "blocks {numbers:?}, expected {:?}",
        step.blocks
    );
    Ok(got)
}

/// On one Deliver stream: a series of refused requests, each answered with its final status
/// and no block; then the whole chain; then a wait for the next block, which a new envelope
/// makes.
async fn deliver_stream_answers_refusals_and_serves_the_next_request(
    cluster: &TestCluster,
    node: usize,
    leader: usize,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let client = &cluster.client;
    let height = cluster.wait_converged(CONVERGE).await?;
    let one = || seek(specified(0), specified(0), false);
    let org9 = client_of(&foreign_ca("Org9MSP"), "Org9MSP", fresh_validity());
    let mut bad_signature = cluster.seek_envelope(client, one());
    bad_signature.signature[0] ^= 1;
    let elsewhere = envelope::create_signed_envelope(
        client,
        HeaderType::DeliverSeekInfo,
        "nosuchchannel",
        one().encode_to_vec(),
        envelope::new_nonce(),
        now_ms(),
    );
    let far = 1_000_000;
    let steps = vec![
        Step {
            what: "SeekInfo signed by an unknown org -> FORBIDDEN",
            request: cluster.seek_envelope(&org9, one()),
            status: Status::Forbidden,
            blocks: 0..0,
        },
        Step {
            what: "bad signature -> FORBIDDEN",
            request: bad_signature,
            status: Status::Forbidden,
            blocks: 0..0,
        },
        Step {
            what: "expired certificate -> FORBIDDEN",
            request: cluster.seek_envelope(&expired_org1_client(cluster), one()),
            status: Status::Forbidden,
            blocks: 0..0,
        },
        Step {
            what: "malformed payload -> BAD_REQUEST",
            request: Envelope {
                payload: vec![0xff; 8],
                signature: Vec::new(),
            },
            status: Status::BadRequest,
            blocks: 0..0,
        },
        Step {
            what: "not a DELIVER_SEEK_INFO envelope -> BAD_REQUEST",
            request: signed(
                client,
                HeaderType::EndorserTransaction,
                CHANNEL,
                &one().encode_to_vec(),
            ),
            status: Status::BadRequest,
            blocks: 0..0,
        },
        Step {
            what: "unknown channel -> NOT_FOUND",
            request: elsewhere,
            status: Status::NotFound,
            blocks: 0..0,
        },
        Step {
            what: "FAIL_IF_NOT_READY far beyond the height -> NOT_FOUND",
            request: cluster.seek_envelope(client, seek(specified(far), specified(far), true)),
            status: Status::NotFound,
            blocks: 0..0,
        },
        Step {
            what: "start > stop -> BAD_REQUEST",
            request: cluster.seek_envelope(client, seek(specified(2), specified(1), false)),
            status: Status::BadRequest,
            blocks: 0..0,
        },
        Step {
            what: "FAIL_IF_NOT_READY past the end: what exists, then NOT_FOUND",
            request: cluster.seek_envelope(client, seek(specified(0), specified(far), true)),
            status: Status::NotFound,
            blocks: 0..height,
        },
        Step {
            what: "the whole chain -> SUCCESS",
            request: cluster
                .seek_envelope(client, seek(specified(0), specified(height - 1), false)),
            status: Status::Success,
            blocks: 0..height,
        },
    ];
    let (tx, rx) = mpsc::channel::<Envelope>(4);
    let mut stream = cluster
        .client(node)
        .deliver(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut chain = Vec::new();
    for step in steps {
        let what = step.what;
        chain = deliver_step(&tx, &mut stream, step)
            .await
            .with_context(|| what.to_owned())?;
    }
    verify_chain(&cluster.channel, &chain)?;
    // The same stream waits for the next block; a new envelope makes it.
    let next_block = seek(specified(height), specified(height), false);
    tx.send(cluster.seek_envelope(client, next_block)).await?;
    let id = submit_valid(&mut cluster.client(leader), b"deliver: next block", cluster).await?;
    ledger.acked.insert(id.clone());
    let (blocks, status) = until_status(&mut stream).await?;
    anyhow::ensure!(
        status == Status::Success && blocks.len() == 1,
        "waiting for block {height}: {status:?} after {} blocks",
        blocks.len()
    );
    let mut extended = chain;
    extended.extend(blocks);
    verify_chain(&cluster.channel, &extended)?;
    anyhow::ensure!(
        tx_counts(&extended).contains_key(&id),
        "block {height} lacks {id}"
    );
    Ok(())
}

#[test]
fn broadcast_and_deliver_streams_answer_bad_input_in_band_and_stay_usable() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let mut catalogue = Catalogue::default();
    rt.block_on(async {
        let leader = wait_all_follow_leader(&cluster).await.unwrap();
        // A follower: what it orders goes through forwarding to the leader.
        let node = (leader + 1) % 3;
        let mut ledger = Ledger::default();
        catalogue
            .check(
                "Broadcast: [valid, bad signature, valid] -> SUCCESS, FORBIDDEN, SUCCESS; more",
                broadcast_stream_answers_refusals_in_band_and_stays_open(
                    &cluster,
                    node,
                    &mut ledger,
                ),
            )
            .await;
        catalogue
            .check(
                "Deliver: refusals end each request, the same stream serves the next",
                deliver_stream_answers_refusals_and_serves_the_next_request(
                    &cluster,
                    node,
                    leader,
                    &mut ledger,
                ),
            )
            .await;
        catalogue
            .check(
                "after the streams: chains identical and verified, none refused",
                async {
                    assert_chains(&cluster, &ledger.acked, &ledger.refused).await?;
                    Ok(())
                },
            )
            .await;
    });
    catalogue.finish();
}

// ---------------------------------------------------------------------------------------------
// Test 3: the Cluster service only hears pinned consenters.
// ---------------------------------------------------------------------------------------------

/// A well-formed Raft vote request in the orderer's wire encoding (version byte 1, postcard).
fn vote_payload(term: u64, candidate: u64, last_index: u64) -> Vec<u8> {
    let last_log_id = (last_index > 0).then(|| {
        openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, candidate),
            last_index,
        )
    });
    let vote =
        openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(term, candidate), last_log_id);
    let mut payload = vec![1u8];
    payload.extend(postcard::to_stdvec(&vote).unwrap());
    payload
}

fn raft_request(kind: Kind, payload: Vec<u8>) -> RaftRequest {
    RaftRequest {
        channel_id: CHANNEL.into(),
        kind: kind as i32,
        payload,
    }
}

fn terms(cluster: &TestCluster) -> Vec<u64> {
    (0..3)
        .map(|i| {
            let channel = cluster.node(i).registry.get(CHANNEL).unwrap();
            let term = channel.raft.metrics().borrow().current_term;
            term
        })
        .collect()
}

fn expect_denied<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<()> {
    match result {
        Ok(r) => anyhow::bail!("accepted: {:?}", r.into_inner()),
        Err(s) => {
            anyhow::ensure!(
                s.code() == Code::PermissionDenied,
                "{:?} {}",
                s.code(),
                s.message()
            );
            anyhow::ensure!(
                s.message().contains("not a pinned consenter"),
                "message {:?}",
                s.message()
            );
            Ok(())
        }
    }
}

/// A vote for a term far ahead, from a peer's TLS certificate (valid, from a trusted TLS CA,
/// but not pinned), to every node: PERMISSION_DENIED. Accepted, it would depose the leader.
async fn peer_vote_is_denied(
    cluster: &TestCluster,
    tls: &std::path::Path,
    term: u64,
) -> anyhow::Result<()> {
    for node in 0..3 {
        let mut c = cluster.cluster_client_as(node, Some(tls));
        let request = raft_request(Kind::Vote, vote_payload(term, 99, 1 << 40));
        expect_denied(c.raft(request).await).with_context(|| format!("node {node}"))?;
    }
    Ok(())
}

/// A valid client envelope forwarded by a peer's TLS certificate: PERMISSION_DENIED on every
/// node, and it is never ordered.
async fn peer_forward_is_denied(
    cluster: &TestCluster,
    tls: &std::path::Path,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    for node in 0..3 {
        let env = cluster.envelope(format!("smuggled via node {node}").as_bytes());
        ledger.refuse(&env);
        let mut c = cluster.cluster_client_as(node, Some(tls));
        let request = ForwardRequest {
            channel_id: CHANNEL.into(),
            envelopes: vec![env.encode_to_vec()],
        };
        expect_denied(c.forward(request).await).with_context(|| format!("node {node}"))?;
    }
    Ok(())
}

/// Without a client certificate the mutual-TLS handshake fails: no answer from the service.
async fn no_client_certificate_is_refused(
    cluster: &TestCluster,
    node: usize,
    term: u64,
) -> anyhow::Result<()> {
    let mut c = cluster.cluster_client_as(node, None);
    let request = raft_request(Kind::Vote, vote_payload(term, 99, 1 << 40));
    match tokio::time::timeout(STEP, c.raft(request))
        .await
        .context("no answer")?
    {
        Ok(r) => anyhow::bail!(
            "answered without a client certificate: {:?}",
            r.into_inner()
        ),
        Err(s) => {
            eprintln!("        {:?}: {}", s.code(), s.message());
            anyhow::ensure!(
                !s.message().contains("not a pinned consenter"),
                "reached the service: {s:?}"
            )
        }
    }
    Ok(())
}

/// Control: with a pinned consenter's certificate the service answers (a stale vote is
/// rejected in its response, which changes nothing), and garbage is INVALID_ARGUMENT; so the
/// refusals above are about who calls, not what they send.
async fn pinned_consenter_is_heard(
    cluster: &TestCluster,
    node: usize,
    tls: &std::path::Path,
) -> anyhow::Result<()> {
    let mut c = cluster.cluster_client_as(node, Some(tls));
    let r = c
        .raft(raft_request(Kind::Vote, vote_payload(0, 99, 0)))
        .await
        .map_err(|s| anyhow::anyhow!("stale vote: {:?} {}", s.code(), s.message()))?;
    anyhow::ensure!(!r.get_ref().payload.is_empty(), "empty vote response");
    let s = c
        .raft(raft_request(Kind::Vote, b"\x01garbage".to_vec()))
        .await
        .err()
        .context("garbage accepted")?;
    anyhow::ensure!(
        s.code() == Code::InvalidArgument && s.message().contains("cannot decode raft message"),
        "{:?} {}",
        s.code(),
        s.message()
    );
    Ok(())
}

#[test]
fn cluster_service_refuses_tls_clients_that_are_not_pinned_consenters() {
    let cluster = TestCluster::start(ClusterOptions::default()).unwrap();
    let rt = runtime();
    let mut catalogue = Catalogue::default();
    rt.block_on(async {
        let leader = wait_all_follow_leader(&cluster).await.unwrap();
        let peer_tls = cluster.generated.peers[0].dir.join("tls");
        let user = cluster.generated.user("Org1MSP", "User1").unwrap();
        let user_tls = user.tls_cert.parent().unwrap().to_path_buf();
        let orderer_tls = cluster.generated.orderers[leader].dir.join("tls");
        let mut ledger = Ledger::default();
        let huge_term = terms(&cluster).into_iter().max().unwrap_or(0) + 1_000;
        catalogue
            .check(
                "Cluster.Raft vote from a peer's TLS cert -> PERMISSION_DENIED",
                peer_vote_is_denied(&cluster, &peer_tls, huge_term),
            )
            .await;
        catalogue
            .check(
                "Cluster.Raft vote from a client user's TLS cert -> PERMISSION_DENIED",
                peer_vote_is_denied(&cluster, &user_tls, huge_term),
            )
            .await;
        catalogue
            .check(
                "Cluster.Raft append-entries from a peer's TLS cert -> PERMISSION_DENIED",
                async {
                    let mut c = cluster.cluster_client_as(leader, Some(&peer_tls));
                    let request = raft_request(Kind::AppendEntries, b"anything".to_vec());
                    expect_denied(c.raft(request).await)
                },
            )
            .await;
        catalogue
            .check(
                "Cluster.Forward from a peer's TLS cert -> PERMISSION_DENIED, not ordered",
                peer_forward_is_denied(&cluster, &peer_tls, &mut ledger),
            )
            .await;
        catalogue
            .check(
                "Cluster port without a client certificate -> refused by TLS",
                no_client_certificate_is_refused(&cluster, leader, huge_term),
            )
            .await;
        catalogue
            .check(
                "control: a pinned consenter is heard (stale vote answered, garbage refused)",
                pinned_consenter_is_heard(&cluster, leader, &orderer_tls),
            )
            .await;
        catalogue
            .check(
                "after the intruders: no term jump, every node orders, chains identical",
                async {
                    let now = terms(&cluster);
                    anyhow::ensure!(
                        now.iter().all(|t| *t < huge_term),
                        "terms {now:?} reached the intruder's {huge_term}"
                    );
                    wait_all_follow_leader(&cluster).await?;
                    let mut clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
                    every_node_orders(&cluster, &mut clients, &mut ledger, b"after").await?;
                    assert_chains(&cluster, &ledger.acked, &ledger.refused).await?;
                    Ok(())
                },
            )
            .await;
    });
    catalogue.finish();
}
