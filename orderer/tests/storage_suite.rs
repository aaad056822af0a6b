//! Runs openraft's own storage conformance suite (`openraft::testing::Suite::test_all`) against
//! the orderer's fjall-backed Raft storage: [`LogStore`] (log, vote, committed, purge, truncate)
//! and [`StateMachine`] (apply, applied state and membership, snapshot build, transfer and
//! install). Passing proves both behave as openraft assumes a storage implementation does.
//!
//! Every build opens a fresh fjall database in its own temp dir; the genesis block and the
//! orderer signing identity the state machine needs are generated once from the sample network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::StorageError;
use openraft::StorageIOError;
use orderer::block_store::BlockStore;
use orderer::consensus::log_store::LogStore;
use orderer::consensus::state_machine::StateMachine;
use orderer::consensus::NodeId;
use orderer::consensus::TypeConfig;
use orderer::cutter::BatchLimits;
use prost::Message as _;
use shared_proto::material;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use tempfile::TempDir;

const CHANNEL: &str = "mychannel";

/// Builds a fresh `LogStore` + `StateMachine` pair, each time on a new fjall database.
struct Builder {
    genesis: Block,
    signer: Arc<SigningIdentity>,
}

fn storage_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    /// The returned `TempDir` is the guard: the database directory lives as long as the test.
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(storage_err)?;
        let db = fjall::Database::builder(dir.path().join("ledger"))
            .open()
            .map_err(storage_err)?;
        let log = LogStore::open(&db, CHANNEL).map_err(storage_err)?;
        let blocks = BlockStore::open(&db, CHANNEL).map_err(storage_err)?;
        let limits = BatchLimits {
            message_count_max: 10,
            bytes_preferred_max: 1 << 20,
            bytes_absolute_max: 1 << 22,
        };
        let sm = StateMachine::open(blocks, CHANNEL, &self.genesis, self.signer.clone(), limits)
            .map_err(storage_err)?;
        Ok((dir, log, sm))
    }
}

fn now_unix() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_secs()).unwrap()
}

/// A plain (not `#[tokio::test]`) test: the suite starts its own runtime for every case.
#[test]
fn openraft_storage_suite() {
    let material_dir = TempDir::new().unwrap();
    let spec = NetworkSpec::from_toml(include_str!("../../deploy/sample-network.toml")).unwrap();
    let generated = material::generate(&spec, material_dir.path(), now_unix()).unwrap();
    let (channel_id, genesis_path) = &generated.channels[0];
    assert_eq!(channel_id, CHANNEL);
    let genesis = Block::decode(std::fs::read(genesis_path).unwrap().as_slice()).unwrap();
    let orderer_dir = &generated.orderers[0].dir;
    let signer = SigningIdentity::from_pem_files(
        "OrdererMSP",
        &orderer_dir.join("msp/cert.pem"),
        &orderer_dir.join("msp/key.pem"),
    )
    .unwrap();

    Suite::test_all(Builder {
        genesis,
        signer: Arc::new(signer),
    })
    .unwrap();
}
