//! Deliver's checks beyond the signature and Readers at request time: a seek envelope whose
//! timestamp is far from the node's clock is a replay and is refused; a long-lived stream ends
//! when its client's certificate expires. Real servers over TLS (see `common`).

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use common::now_unix;
use common::ClusterOptions;
use common::TestCluster;
use common::CHANNEL;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::msp::CertInfo;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::DeliverResponse;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::seek::follow;
use shared_proto::seek::specified;
use tokio_stream::wrappers::ReceiverStream;

const MINUTE_MS: i64 = 60_000;

fn one_orderer() -> anyhow::Result<TestCluster> {
    TestCluster::start(ClusterOptions {
        orderers: 1,
        ..Default::default()
    })
}

fn seek(start: u64, stop: Option<u64>) -> SeekInfo {
    SeekInfo {
        start: Some(specified(start)),
        stop: Some(stop.map_or_else(follow, specified)),
        behavior: SeekBehavior::BlockUntilReady as i32,
    }
}

fn seek_at(cluster: &TestCluster, seek: SeekInfo, timestamp_ms: i64) -> Envelope {
    envelope::create_signed_envelope(
        &cluster.client,
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        envelope::new_nonce(),
        timestamp_ms.max(0) as u64,
    )
}

/// Sends one request and returns the final status (blocks before it are skipped).
async fn final_status(cluster: &TestCluster, request: Envelope) -> anyhow::Result<Status> {
    let mut stream = cluster
        .client(0)
        .deliver(futures::stream::iter([request]))
        .await?
        .into_inner();
    let next = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(msg) = stream.next().await {
            if let Some(Type::Status(s)) = msg?.r#type {
                return Ok(Status::try_from(s)?);
            }
        }
        anyhow::bail!("stream ended without a status")
    });
    next.await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_envelope_with_a_timestamp_outside_the_window_is_refused_as_a_replay(
) -> anyhow::Result<()> {
    let cluster = one_orderer()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let now_ms = now_unix() * 1000;
    for (what, ts, expected) in [
        ("16 min old", now_ms - 16 * MINUTE_MS, Status::BadRequest),
        ("a day old", now_ms - 1440 * MINUTE_MS, Status::BadRequest),
        ("16 min ahead", now_ms + 16 * MINUTE_MS, Status::BadRequest),
        ("zero", 0, Status::BadRequest),
        ("14 min old", now_ms - 14 * MINUTE_MS, Status::Success),
        ("14 min ahead", now_ms + 14 * MINUTE_MS, Status::Success),
        ("now", now_ms, Status::Success),
    ] {
        let got = final_status(&cluster, seek_at(&cluster, seek(0, Some(0)), ts)).await?;
        println!("seek envelope {what}: {got:?}");
        anyhow::ensure!(
            got == expected,
            "{what}: got {got:?}, expected {expected:?}"
        );
    }
    // The window follows the node's clock, not the test's: a node whose clock is an hour
    // ahead refuses what was fresh and accepts what matches its time.
    let node = cluster.node(0);
    node.registry.clock_skew_secs.store(3600, Ordering::Relaxed);
    let now_ms = now_unix() * 1000;
    let got = final_status(&cluster, seek_at(&cluster, seek(0, Some(0)), now_ms)).await?;
    anyhow::ensure!(
        got == Status::BadRequest,
        "an hour behind the node: {got:?}"
    );
    let ahead = now_ms + 60 * MINUTE_MS;
    let got = final_status(&cluster, seek_at(&cluster, seek(0, Some(0)), ahead)).await?;
    anyhow::ensure!(got == Status::Success, "at the node's time: {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_stream_ends_forbidden_when_the_client_certificate_expires() -> anyhow::Result<()> {
    let cluster = one_orderer()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let not_after = CertInfo::from_der(cluster.client.cert_der())?.not_after_unix;
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = cluster
        .client(0)
        .deliver(ReceiverStream::new(rx))
        .await?
        .into_inner();
    requests
        .send(cluster.seek_envelope(&cluster.client, seek(0, None)))
        .await?;
    let mut next = async || -> anyhow::Result<DeliverResponse> {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("no message within 20 s"))?;
        Ok(msg.ok_or_else(|| anyhow::anyhow!("stream ended"))??)
    };
    anyhow::ensure!(matches!(next().await?.r#type, Some(Type::Block(_))));

    // While the certificate is valid, new blocks keep coming.
    let mut client = cluster.client(0);
    client.submit(cluster.envelope(b"before expiry")).await?;
    anyhow::ensure!(matches!(next().await?.r#type, Some(Type::Block(_))));

    // The node's clock passes the certificate's not_after: the stream ends with FORBIDDEN,
    // with no new block needed to notice.
    let skew = not_after - now_unix() + 60;
    cluster
        .node(0)
        .registry
        .clock_skew_secs
        .store(skew, Ordering::Relaxed);
    let moved = Instant::now();
    let ended = next().await?;
    println!(
        "after the clock passed not_after: {:?} ({:?} later)",
        ended.r#type,
        moved.elapsed()
    );
    anyhow::ensure!(
        ended.r#type == Some(Type::Status(Status::Forbidden as i32)),
        "expected FORBIDDEN, got {:?}",
        ended.r#type
    );
    // A new request with the expired certificate is refused too.
    requests
        .send(cluster.seek_envelope(&cluster.client, seek(0, None)))
        .await?;
    let again = next().await?;
    anyhow::ensure!(
        again.r#type == Some(Type::Status(Status::Forbidden as i32)),
        "expected FORBIDDEN, got {:?}",
        again.r#type
    );
    Ok(())
}
