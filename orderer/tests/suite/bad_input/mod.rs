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
//! - Submit, FAILED_PRECONDITION: CONFIG, DELIVER_SEEK_INFO envelopes; INVALID_ARGUMENT: a
//!   CONFIG_UPDATE whose data is not a config update (the rest: `config_updates.rs`).
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

use crate::common;

mod cluster;
mod streams;
mod submit;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use common::*;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::msp::CertificateAuthority;
use shared_proto::msp::Role;
use shared_proto::msp::SigningIdentity;
use shared_proto::msp::Usage;
use shared_proto::msp::Validity;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::seek_position;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::orderer::SeekPosition;
use shared_proto::pb::orderer::SeekSpecified;
use shared_proto::signing::Domain;
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
