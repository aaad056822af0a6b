//! Reading chains back in cluster tests: Deliver from a node, chain verification, tx counts.

use std::collections::BTreeMap;

use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::block;
use shared_proto::block::Expected;
use shared_proto::channel::Channel;
use shared_proto::envelope;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::seek_position;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::orderer::SeekPosition;
use shared_proto::pb::orderer::SeekSpecified;

use super::now_unix;
use super::TestCluster;
use super::CHANNEL;

impl TestCluster {
    /// Every block of node `i` from 0 to `stop`, by Deliver.
    pub async fn deliver_all(&self, i: usize, stop: u64) -> anyhow::Result<Vec<Block>> {
        let seek = SeekInfo {
            start: Some(SeekPosition {
                r#type: Some(seek_position::Type::Specified(SeekSpecified { number: 0 })),
            }),
            stop: Some(SeekPosition {
                r#type: Some(seek_position::Type::Specified(SeekSpecified {
                    number: stop,
                })),
            }),
            behavior: SeekBehavior::BlockUntilReady as i32,
        };
        self.deliver(i, seek).await
    }

    /// Runs one Deliver request; returns the blocks, failing on a non-SUCCESS final status.
    pub async fn deliver(&self, i: usize, seek: SeekInfo) -> anyhow::Result<Vec<Block>> {
        let request = self.seek_envelope(&self.client, seek);
        let mut stream = self
            .client(i)
            .deliver(futures::stream::iter([request]))
            .await?
            .into_inner();
        let mut blocks = Vec::new();
        while let Some(msg) = stream.next().await {
            match msg?.r#type {
                Some(Type::Block(b)) => blocks.push(b),
                Some(Type::Status(s)) => {
                    anyhow::ensure!(
                        s == shared_proto::pb::common::Status::Success as i32,
                        "deliver status {s}"
                    );
                    return Ok(blocks);
                }
                None => anyhow::bail!("empty deliver response"),
            }
        }
        anyhow::bail!("deliver stream ended without status")
    }

    pub fn seek_envelope(&self, signer: &SigningIdentity, seek: SeekInfo) -> Envelope {
        envelope::create_signed_envelope(
            signer,
            HeaderType::DeliverSeekInfo,
            CHANNEL,
            seek.encode_to_vec(),
            envelope::new_nonce(),
            now_unix() as u64 * 1000,
        )
    }
}

/// Verifies a chain from block 0: hash links, data hashes and orderer signatures. Returns the
/// header hash of every block.
pub fn verify_chain(channel: &Channel, blocks: &[Block]) -> anyhow::Result<Vec<[u8; 32]>> {
    let mut hashes = Vec::new();
    let (_, genesis_hash) = block::verify_genesis(&blocks[0])?;
    hashes.push(genesis_hash);
    for (n, b) in blocks.iter().enumerate().skip(1) {
        let h = block::verify_block(
            channel,
            b,
            Expected {
                number: n as u64,
                previous_hash: Some(hashes[n - 1]),
            },
            now_unix(),
        )
        .with_context(|| format!("block {n}"))?;
        hashes.push(h);
    }
    Ok(hashes)
}

/// Tx id → how many times it appears in `blocks` (block 0 excluded).
pub fn tx_counts(blocks: &[Block]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for b in blocks.iter().skip(1) {
        for env in block::tx_envelopes(b) {
            if let Some(id) = orderer::block_store::tx_id_of(env) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
    }
    counts
}
