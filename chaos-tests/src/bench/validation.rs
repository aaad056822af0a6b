//! `validation`: one peer's commit path, in process, with the real components.
//!
//! Material for the sample network is generated into a temp dir; a fjall [`Ledger`] in the same
//! temp dir gets the channel's genesis block (`Committer::bootstrap`). Blocks of `token`
//! transactions are then built **before timing**: each transaction is an
//! ENDORSER_TRANSACTION created and signed by Org1MSP User1, carrying its proposal (`mint`),
//! endorsed by Org1MSP peer0 and Org2MSP peer0 (the chaincode's policy is
//! `AND('Org1MSP.peer','Org2MSP.peer')`), with a read/write set that reads `balance/acct<i>` at "absent" and writes it (a distinct `i` per
//! transaction, so there are no MVCC conflicts). Blocks are signed by orderer1 and chained
//! from the genesis block.
//!
//! Timed: `Committer::process_run` on runs of up to `RUN_BLOCKS_MAX` blocks, as the deliver
//! client hands them over (verify block → validate every transaction → commit block + codes +
//! state + index in one batch; the state-free stage of block N+1 overlaps block N's in-order
//! stage and commit). Every code must be VALID,
//! or the run is refused. A short warm-up (two blocks, untimed) sizes the run to `--seconds`.
//!
//! Bound: a transaction needs 3 signature verifications (creator + 2 endorsements), so with
//! every core batch-verifying, `bound = cores × batch verify/s/core / 3`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use prost::Message as _;
use rayon::prelude::*;
use serde_json::json;
use shared_proto::block;
use shared_proto::channel::Channel;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::material::generate;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::tx::ChaincodeAction;
use shared_proto::pb::tx::ChaincodeId;
use shared_proto::pb::tx::ChaincodeInvocation;
use shared_proto::pb::tx::Endorsement;
use shared_proto::pb::tx::KvRead;
use shared_proto::pb::tx::KvWrite;
use shared_proto::pb::tx::NsReadWriteSet;
use shared_proto::pb::tx::Proposal;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::Response;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::signing;
use shared_proto::signing::Domain;

use peer::commit::Committer;
use peer::commit::RUN_BLOCKS_MAX;
use peer::commit::RUN_BYTES_MAX;
use peer::ledger::Ledger;
use peer::metrics::Metrics;

use super::Percentiles;
use super::RawLimits;
use super::Report;
use super::CHANNEL;

const CHAINCODE: &str = "token";
const ENDORSEMENTS_PER_TX: usize = 2;
/// Signature verifications per transaction: creator + endorsements.
const VERIFIES_PER_TX: f64 = 1.0 + ENDORSEMENTS_PER_TX as f64;
const WARMUP_BLOCKS: u64 = 2;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of blocks to time (the block count is sized from a warm-up).
    pub seconds: f64,
    /// Transactions per block.
    pub block_size: usize,
}

/// The identities that sign transactions and blocks.
struct Signers {
    creator: SigningIdentity,
    endorsers: [SigningIdentity; ENDORSEMENTS_PER_TX],
    orderer: SigningIdentity,
}

/// Builds chained, signed blocks of endorsed `token` transactions.
struct Builder {
    signers: Signers,
    version: String,
    timestamp_ms: u64,
    block_size: usize,
    /// Next block number and the previous block's header hash.
    next_number: u64,
    previous_hash: [u8; 32],
}

impl Builder {
    /// The next block: transactions for accounts `number × block_size + j`.
    fn next_block(&mut self) -> Block {
        let number = self.next_number;
        let first = number * self.block_size as u64;
        let data: Vec<Vec<u8>> = (0..self.block_size as u64)
            .into_par_iter()
            .map(|j| self.transaction(first + j))
            .collect();
        let mut block = block::new_block(number, self.previous_hash.to_vec(), data, 0);
        block::sign_block(&mut block, CHANNEL, &self.signers.orderer);
        self.previous_hash = block::header_hash(&block).unwrap_or_default();
        self.next_number += 1;
        block
    }

    /// The encoded envelope of transaction `n` (account `acct<n>`).
    fn transaction(&self, n: u64) -> Vec<u8> {
        let key = format!("balance/acct{n}");
        let rwset = TxReadWriteSet {
            ns_rwset: vec![NsReadWriteSet {
                namespace: CHAINCODE.to_owned(),
                reads: vec![KvRead {
                    key: key.clone(),
                    version: None,
                }],
                writes: vec![KvWrite {
                    key,
                    is_delete: false,
                    value: 1000u64.to_be_bytes().to_vec(),
                }],
                range_queries_info: Vec::new(),
            }],
        };
        let mut nonce = b"weft-bench-valid".to_vec();
        nonce.extend_from_slice(&n.to_be_bytes());
        let creator = self.signers.creator.serialized().to_vec();
        let chaincode_id = ChaincodeId {
            name: CHAINCODE.to_owned(),
            version: self.version.clone(),
        };
        let proposal = Proposal {
            header: Some(Header {
                channel_header: Some(ChannelHeader {
                    r#type: HeaderType::EndorserTransaction as i32,
                    channel_id: CHANNEL.to_owned(),
                    tx_id: shared_proto::hash::tx_id(&nonce, &creator),
                    timestamp_unix_ms: self.timestamp_ms,
                }),
                signature_header: Some(SignatureHeader {
                    creator,
                    nonce: nonce.clone(),
                }),
            }),
            invocation: Some(ChaincodeInvocation {
                chaincode_id: Some(chaincode_id.clone()),
                function: "mint".to_owned(),
                args: vec![format!("acct{n}").into_bytes(), b"1000".to_vec()],
            }),
        }
        .encode_to_vec();
        let payload = ProposalResponsePayload {
            proposal_hash: shared_proto::hash::proposal_hash(&proposal).to_vec(),
            action: Some(ChaincodeAction {
                chaincode_id: Some(chaincode_id),
                results: Some(rwset),
                response: Some(Response {
                    status: 200,
                    message: String::new(),
                    payload: Vec::new(),
                }),
                events: Vec::new(),
            }),
        }
        .encode_to_vec();
        let endorsements = self
            .signers
            .endorsers
            .iter()
            .map(|e| {
                let endorser = e.serialized().to_vec();
                let signature =
                    signing::sign(e.signing_key(), Domain::Endorsement, &[&payload, &endorser]);
                Endorsement {
                    endorser,
                    signature,
                }
            })
            .collect();
        let tx = Transaction {
            proposal_response_payload: payload,
            endorsements,
            proposal,
        };
        create_signed_envelope(
            &self.signers.creator,
            HeaderType::EndorserTransaction,
            CHANNEL,
            tx.encode_to_vec(),
            nonce,
            self.timestamp_ms,
        )
        .encode_to_vec()
    }
}

/// Processes `block`, refusing the run unless every transaction is VALID.
fn process(committer: &Committer, block: Block) -> anyhow::Result<()> {
    let number = block.header.as_ref().map_or(0, |h| h.number);
    let committed = committer
        .process(block)
        .with_context(|| format!("committing block {number}"))?;
    let invalid: Vec<(usize, TxValidationCode)> = committed
        .codes
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != TxValidationCode::Valid)
        .map(|(i, c)| (i, *c))
        .collect();
    anyhow::ensure!(
        invalid.is_empty(),
        "block {number}: {} of {} transactions are not VALID (first: tx {} {:?}); \
         a benchmark of failures is meaningless",
        invalid.len(),
        committed.codes.len(),
        invalid[0].0,
        invalid[0].1,
    );
    Ok(())
}

/// Splits `blocks` into runs the way the deliver client hands them to the committer: at most
/// `RUN_BLOCKS_MAX` blocks and `RUN_BYTES_MAX` bytes each.
fn runs(blocks: Vec<Block>) -> Vec<Vec<Block>> {
    let mut runs: Vec<Vec<Block>> = Vec::new();
    let mut bytes = 0;
    for b in blocks {
        let size = b.encoded_len();
        match runs.last_mut() {
            Some(run) if run.len() < RUN_BLOCKS_MAX && bytes + size <= RUN_BYTES_MAX => {
                bytes += size;
                run.push(b);
            }
            _ => {
                bytes = size;
                runs.push(vec![b]);
            }
        }
    }
    runs
}

/// Commits a run through the pipelined path, refusing the run unless every transaction of
/// every block is VALID.
fn process_run(committer: &Committer, run: Vec<Block>) -> anyhow::Result<()> {
    let outcome = committer.process_run(run);
    anyhow::ensure!(
        outcome.leftover.is_empty(),
        "{} blocks left unprocessed",
        outcome.leftover.len()
    );
    for result in outcome.results {
        let committed = result.context("committing a run")?;
        if let Some((i, c)) = committed
            .codes
            .iter()
            .enumerate()
            .find(|(_, c)| **c != TxValidationCode::Valid)
        {
            anyhow::bail!(
                "block {}: tx {i} is {c:?}; a benchmark of failures is meaningless",
                committed.number
            );
        }
    }
    Ok(())
}

/// Sum of a histogram in the peer's metrics text (`weft_peer_<name>_sum`).
fn histogram_sum(metrics: &Metrics, name: &str) -> f64 {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &metrics.registry).is_err() {
        return 0.0;
    }
    let prefix = format!("weft_peer_{name}_sum ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the benchmark in `dir` (material, ledger).
pub fn run(opts: &Options, raw: RawLimits, dir: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.block_size > 0, "--block-size must be at least 1");
    let now = super::now_unix();
    let spec = super::sample_spec()?;
    let generated =
        generate(&spec, &dir.join("net"), now).context("generating the sample network")?;
    let genesis_path = &generated
        .channels
        .iter()
        .find(|(id, _)| id == CHANNEL)
        .with_context(|| format!("sample spec has no channel {CHANNEL}"))?
        .1;
    let genesis = Block::decode(
        std::fs::read(genesis_path)
            .with_context(|| format!("reading {}", genesis_path.display()))?
            .as_slice(),
    )
    .context("decoding the genesis block")?;
    let channel = Channel::from_config_block(&genesis).context("channel config")?;
    let version = channel
        .chaincode(CHAINCODE)
        .with_context(|| format!("chaincode {CHAINCODE} in the sample channel"))?
        .version
        .clone();
    let node = |msp: &str, name: &str, kind: &str| -> anyhow::Result<SigningIdentity> {
        let nodes = if kind == "orderer" {
            &generated.orderers
        } else {
            &generated.peers
        };
        let n = nodes
            .iter()
            .find(|n| n.msp_id == msp && n.name == name)
            .with_context(|| format!("{msp} {name} in the sample network"))?;
        SigningIdentity::from_pem_files(
            msp,
            &n.dir.join("msp/cert.pem"),
            &n.dir.join("msp/key.pem"),
        )
        .with_context(|| format!("identity of {msp} {name}"))
    };
    let user = generated
        .user("Org1MSP", "User1")
        .context("Org1MSP User1")?;
    let signers = Signers {
        creator: SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key)
            .context("identity of Org1MSP User1")?,
        endorsers: [
            node("Org1MSP", "peer0", "peer")?,
            node("Org2MSP", "peer0", "peer")?,
        ],
        orderer: node("OrdererMSP", "orderer1", "orderer")?,
    };

    let ledger_dir = dir.join("ledger");
    let db = fjall::Database::builder(&ledger_dir)
        .open()
        .with_context(|| format!("opening the ledger at {}", ledger_dir.display()))?;
    let ledger = Ledger::open(&db, CHANNEL).context("opening the channel ledger")?;
    let metrics = Arc::new(Metrics::default());
    let committer = Committer::new(Arc::new(channel), ledger, metrics.clone());
    committer
        .bootstrap(&genesis)
        .context("committing the genesis block")?;

    let mut builder = Builder {
        signers,
        version,
        timestamp_ms: (now as u64) * 1000,
        block_size: opts.block_size,
        next_number: 1,
        previous_hash: block::header_hash(&genesis).context("genesis header hash")?,
    };

    // Warm-up: sizes the run; not timed.
    let mut warmup = Duration::ZERO;
    for _ in 0..WARMUP_BLOCKS {
        let b = builder.next_block();
        let started = Instant::now();
        process(&committer, b)?;
        warmup = started.elapsed();
    }
    let est_blocks_per_s = 1.0 / warmup.as_secs_f64().max(1e-6);
    let blocks = ((opts.seconds * est_blocks_per_s * 1.05).ceil() as usize).max(3);
    eprintln!(
        "validation: warm-up block took {:.1} ms; building {blocks} blocks of {} transactions \
         (not timed)",
        warmup.as_secs_f64() * 1e3,
        opts.block_size
    );
    let build_started = Instant::now();
    let prebuilt: Vec<Block> = (0..blocks).map(|_| builder.next_block()).collect();
    let prebuilt_bytes: usize = prebuilt.iter().map(|b| b.encoded_len()).sum();
    let build_secs = build_started.elapsed().as_secs_f64();

    let (validate_before, commit_before) = (
        histogram_sum(&metrics, "validation_seconds"),
        histogram_sum(&metrics, "commit_seconds"),
    );
    let mut latencies = Vec::with_capacity(blocks);
    let cpu_before = super::procfs::process_cpu_seconds();
    let started = Instant::now();
    for run in runs(prebuilt) {
        let t = Instant::now();
        let count = run.len();
        process_run(&committer, run)?;
        // Per block: a run's blocks are pipelined, so its time is shared among them.
        latencies.extend(std::iter::repeat_n(
            t.elapsed() / count.max(1) as u32,
            count,
        ));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cores_busy = (super::procfs::process_cpu_seconds() - cpu_before) / elapsed;
    let validate_secs = histogram_sum(&metrics, "validation_seconds") - validate_before;
    let commit_secs = histogram_sum(&metrics, "commit_seconds") - commit_before;

    let txs = (blocks * opts.block_size) as f64;
    let tx_per_s = txs / elapsed;
    let bound = raw.cores as f64 * raw.batch_verify_per_s_per_core / VERIFIES_PER_TX;
    let tx_bytes = prebuilt_bytes as f64 / txs;
    let rss = super::peak_rss_mib()?;
    let other_secs = (elapsed - validate_secs - commit_secs).max(0.0);
    let share = |s: f64| 100.0 * s / elapsed;
    Ok(Report {
        kind: "validation",
        tx_per_s,
        tx_per_s_label: "tx/s committed (all VALID)".into(),
        latency_ms: Percentiles::of(&latencies),
        latency_label: format!(
            "block time ({} tx; a run of up to {RUN_BLOCKS_MAX} pipelined blocks / its blocks)",
            opts.block_size
        ),
        extra_latencies: Vec::new(),
        raw,
        bound_tx_per_s: bound,
        bound_formula: format!(
            "cores × ed25519 batch verify/s/core / {VERIFIES_PER_TX} \
             (creator + {ENDORSEMENTS_PER_TX} endorsements per tx)"
        ),
        peak_rss_mib: vec![("peer".into(), rss)],
        rss_note: format!(
            "peak RSS is the whole bench process: it includes {:.1} MiB of pre-built blocks",
            prebuilt_bytes as f64 / (1024.0 * 1024.0)
        ),
        extra: vec![
            (
                "validate_ms_per_block".into(),
                "validate ms/block (phase 1 + 2)".into(),
                1e3 * validate_secs / blocks as f64,
            ),
            (
                "commit_ms_per_block".into(),
                "ledger commit ms/block".into(),
                1e3 * commit_secs / blocks as f64,
            ),
        ],
        series: Vec::new(),
        config: json!({
            "block_size": opts.block_size,
            "blocks": blocks,
            "transactions": blocks * opts.block_size,
            "endorsements_per_tx": ENDORSEMENTS_PER_TX,
            "signature_verifications_per_tx": VERIFIES_PER_TX,
            "reads_per_tx": 1,
            "writes_per_tx": 1,
            "tx_bytes": tx_bytes.round(),
            "cores": raw.cores,
            "seconds_requested": opts.seconds,
            "seconds_measured": elapsed,
            "prebuild_seconds": build_secs,
            "chaincode": CHAINCODE,
            "endorsement_policy": "AND('Org1MSP.peer','Org2MSP.peer')",
            "ledger": "fjall, in the bench's temp dir",
        }),
        notes: vec![
            format!(
                "time split: validate {:.0}%, ledger commit {:.0}%, block verify + rest {:.0}%",
                share(validate_secs),
                share(commit_secs),
                share(other_secs)
            ),
            format!(
                "process CPU while timed: {cores_busy:.2} of {} cores busy",
                raw.cores
            ),
            "the peer verifies every signature of a block in ed25519 batches of 64 \
             (peer/src/validate/batch.rs), the batch size the bound assumes"
                .into(),
        ],
    })
}
