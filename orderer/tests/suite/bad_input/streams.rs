//! Broadcast and Deliver streams: refusals answered in band, and the stream stays usable.

use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::DeliverResponse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::common::*;
use super::{
    assert_chains, client_of, expired_org1_client, foreign_ca, fresh_validity, now_ms, runtime,
    seek, signed, specified, submit_valid, tx_id, wait_all_follow_leader, Catalogue, Ledger,
    ABSOLUTE_MAX, CONVERGE, STEP,
};

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
