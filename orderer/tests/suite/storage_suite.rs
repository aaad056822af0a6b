//! Runs openraft's own storage conformance suite (`openraft::testing::Suite::test_all`) against
//! the orderer's fjall-backed Raft storage: [`LogStore`] (log, vote, committed, purge, truncate)
//! and [`StateMachine`] (apply, applied state and membership, snapshot build, transfer and
//! install). Passing proves both behave as openraft assumes a storage implementation does.
//!
//! The reopen tests below close a store's database and open it again (a restart) and compare
//! what it reports with what it held: the log after truncate and purge, an installed snapshot,
//! a block store with a gap.
//!
//! Every build opens a fresh fjall database in its own temp dir; the genesis block and the
//! orderer signing identity the state machine needs are generated once from the sample network.

use std::sync::Arc;

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::StorageError;
use openraft::StorageIOError;
use orderer::block_store::BlockStore;
use orderer::consensus::log_store::LogStore;
use orderer::consensus::log_store::Reconciled;
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
    let spec = NetworkSpec::from_toml(include_str!("../../../deploy/sample-network.toml")).unwrap();
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

// ---- Reopen and compare: what a store reports after its database is closed and opened again
// (a restart) is what it held before.

use openraft::storage::RaftLogStorage as _;
use openraft::storage::RaftSnapshotBuilder as _;
use openraft::storage::RaftStateMachine as _;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::RaftLogReader as _;
use openraft::Vote;
use orderer::consensus::Entry;
use orderer::consensus::LogId;
use orderer::consensus::Request;
use shared_proto::envelope;
use shared_proto::pb::common::HeaderType;

struct Material {
    _dir: TempDir,
    genesis: Block,
    signer: Arc<SigningIdentity>,
    client: SigningIdentity,
}

fn material() -> Material {
    let dir = TempDir::new().unwrap();
    let spec = NetworkSpec::from_toml(include_str!("../../../deploy/sample-network.toml")).unwrap();
    let generated = material::generate(&spec, dir.path(), now_unix()).unwrap();
    let genesis =
        Block::decode(std::fs::read(&generated.channels[0].1).unwrap().as_slice()).unwrap();
    let o = &generated.orderers[0].dir;
    let signer = SigningIdentity::from_pem_files(
        "OrdererMSP",
        &o.join("msp/cert.pem"),
        &o.join("msp/key.pem"),
    )
    .unwrap();
    let user = generated.user("Org1MSP", "User1").unwrap();
    let client = SigningIdentity::from_pem_files("Org1MSP", &user.cert, &user.key).unwrap();
    Material {
        _dir: dir,
        genesis,
        signer: Arc::new(signer),
        client,
    }
}

const LIMITS: BatchLimits = BatchLimits {
    message_count_max: 3,
    bytes_preferred_max: 1 << 20,
    bytes_absolute_max: 2 << 20,
};

fn open_db(dir: &TempDir) -> fjall::Database {
    fjall::Database::builder(dir.path().join("ledger"))
        .open()
        .unwrap()
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn tx(m: &Material, body: &[u8]) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(
        envelope::create_signed_envelope(
            &m.client,
            HeaderType::EndorserTransaction,
            CHANNEL,
            body.to_vec(),
            envelope::new_nonce(),
            now_unix() as u64 * 1000,
        )
        .encode_to_vec(),
    )
}

/// Entries `first..first + n`, each carrying two fresh envelopes.
fn tx_entries(m: &Material, first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|i| Entry {
            log_id: log_id(1, i),
            payload: EntryPayload::Normal(Request::Envelopes(vec![
                tx(m, format!("{i}a").as_bytes()),
                tx(m, format!("{i}b").as_bytes()),
            ])),
        })
        .collect()
}

#[tokio::test]
async fn log_store_reopened_after_append_vote_purge_and_truncate_reports_the_same_log() {
    let dir = TempDir::new().unwrap();
    let vote = Vote::new_committed(3, 2);
    let (state, entries, committed) = {
        let db = open_db(&dir);
        let mut log = LogStore::open(&db, CHANNEL).unwrap();
        assert!(log.is_pristine().await.unwrap());
        log.append_durable((0..=20).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 15))).await.unwrap();
        log.purge(log_id(1, 5)).await.unwrap();
        // A new leader's entries replace the conflicting tail 18..=20.
        log.truncate(log_id(1, 18)).await.unwrap();
        log.append_durable([blank(3, 18)]).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        let entries = log.try_get_log_entries(0..).await.unwrap();
        let committed = log.read_committed().await.unwrap();
        (state, entries, committed)
    };
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(3, 18)));
    assert_eq!(entries.len(), 13, "entries 6..=18 remain");

    let db = open_db(&dir);
    let mut log = LogStore::open(&db, CHANNEL).unwrap();
    let reopened = log.get_log_state().await.unwrap();
    assert_eq!(reopened.last_purged_log_id, state.last_purged_log_id);
    assert_eq!(reopened.last_log_id, state.last_log_id);
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), committed);
    let again = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(
        again.iter().map(|e| e.log_id).collect::<Vec<_>>(),
        entries.iter().map(|e| e.log_id).collect::<Vec<_>>()
    );
    assert!(log.try_get_log_entries(0..=5).await.unwrap().is_empty());

    // The reopened log keeps working from where it was: purge everything, reopen again, and
    // the last log id is the purge point (an empty log that is not a fresh one).
    log.purge(log_id(3, 18)).await.unwrap();
    drop(log);
    drop(db);
    let db = open_db(&dir);
    let mut log = LogStore::open(&db, CHANNEL).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 18)));
    assert_eq!(state.last_log_id, Some(log_id(3, 18)));
    assert!(log.try_get_log_entries(0..).await.unwrap().is_empty());
    // A node in this state has Raft state: it must resume, never start as a first boot.
    assert!(!log.is_pristine().await.unwrap());
}

#[tokio::test]
async fn state_machine_reopened_after_installing_a_snapshot_keeps_the_installed_state() {
    let m = material();
    // A leader's state machine cuts 3 blocks and builds a snapshot ...
    let leader_dir = TempDir::new().unwrap();
    let leader_db = open_db(&leader_dir);
    let leader_store = BlockStore::open(&leader_db, CHANNEL).unwrap();
    let mut leader =
        StateMachine::open(leader_store, CHANNEL, &m.genesis, m.signer.clone(), LIMITS).unwrap();
    leader.apply(tx_entries(&m, 1, 5)).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let leader_status = leader.subscribe().borrow().clone();

    // ... which a fresh follower installs, then restarts.
    let dir = TempDir::new().unwrap();
    {
        let db = open_db(&dir);
        let store = BlockStore::open(&db, CHANNEL).unwrap();
        let mut sm =
            StateMachine::open(store, CHANNEL, &m.genesis, m.signer.clone(), LIMITS).unwrap();
        let data = snapshot.snapshot.get_ref().clone();
        sm.install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(data)))
            .await
            .unwrap();
    }
    let db = open_db(&dir);
    let store = BlockStore::open(&db, CHANNEL).unwrap();
    let mut sm =
        StateMachine::open(store.clone(), CHANNEL, &m.genesis, m.signer.clone(), LIMITS).unwrap();
    assert_eq!(
        sm.applied_state().await.unwrap().0,
        snapshot.meta.last_log_id
    );
    // The replicated state matches; the per-reason cut counts are each node's own.
    let mut status = sm.subscribe().borrow().clone();
    assert_eq!(
        status.blocks_cut,
        orderer::cutter::CutCounts::default(),
        "the follower cut nothing itself"
    );
    status.blocks_cut = leader_status.blocks_cut;
    assert_eq!(status, leader_status);
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("installed snapshot kept");
    assert_eq!(current.meta, snapshot.meta);
    // The follower holds only the genesis block: the rest is catch-up's job.
    assert_eq!(store.height(), 1);
}

#[tokio::test]
async fn block_store_reopened_reports_the_same_height_blocks_and_tx_ids() {
    let m = material();
    let dir = TempDir::new().unwrap();
    // Real blocks, cut by a state machine on another database.
    let src_dir = TempDir::new().unwrap();
    let src_db = open_db(&src_dir);
    let src = BlockStore::open(&src_db, CHANNEL).unwrap();
    let mut sm =
        StateMachine::open(src.clone(), CHANNEL, &m.genesis, m.signer.clone(), LIMITS).unwrap();
    sm.apply(tx_entries(&m, 1, 6)).await.unwrap();
    let blocks: Vec<Block> = (0..src.height())
        .map(|n| src.get(n).unwrap().unwrap())
        .collect();
    assert_eq!(blocks.len(), 5);
    let tx_ids: Vec<String> = shared_proto::block::tx_envelopes(&blocks[2])
        .iter()
        .filter_map(|e| orderer::block_store::tx_id_of(e))
        .collect();
    assert_eq!(tx_ids.len(), 3);

    {
        let db = open_db(&dir);
        let store = BlockStore::open(&db, CHANNEL).unwrap();
        for (n, b) in blocks.iter().enumerate().take(3) {
            store.put(n as u64, b).unwrap();
        }
        // Block 4 arrives before block 3 (catch-up out of order): a gap.
        store.put(4, &blocks[4]).unwrap();
        assert_eq!(store.height(), 3);
    }
    let db = open_db(&dir);
    let store = BlockStore::open(&db, CHANNEL).unwrap();
    assert_eq!(store.height(), 3, "height counts only contiguous blocks");
    for (n, b) in blocks.iter().enumerate() {
        if n == 3 {
            assert!(store.get(3).unwrap().is_none());
            continue;
        }
        assert_eq!(store.get(n as u64).unwrap().as_ref(), Some(b), "block {n}");
    }
    for id in &tx_ids {
        assert!(
            store.contains_tx(id).unwrap(),
            "tx {id} not indexed after reopen"
        );
    }
    store.put(3, &blocks[3]).unwrap();
    assert_eq!(
        store.height(),
        5,
        "filling the gap reaches the block stored after it"
    );
}

#[tokio::test]
async fn log_store_purged_past_the_state_machine_is_rewound_to_it_and_reopens_consistent() {
    let dir = TempDir::new().unwrap();
    {
        let db = open_db(&dir);
        let mut log = LogStore::open(&db, CHANNEL).unwrap();
        log.append_durable((0..=12).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        // Consistent: the state machine holds index 10, the log goes on from there.
        log.purge(log_id(1, 8)).await.unwrap();
        log.save_committed(Some(log_id(1, 12))).await.unwrap();
        let r = log.reconcile(Some(log_id(1, 10))).await.unwrap();
        assert_eq!(r, Reconciled::Consistent);
        // A snapshot of index 30 arrived: openraft purged up to it and saved the commit index,
        // then the node died before the state machine wrote the snapshot (it holds 10).
        log.purge(log_id(1, 30)).await.unwrap();
        log.save_committed(Some(log_id(1, 30))).await.unwrap();
    }
    let db = open_db(&dir);
    let mut log = LogStore::open(&db, CHANNEL).unwrap();
    let r = log.reconcile(Some(log_id(1, 10))).await.unwrap();
    assert!(matches!(r, Reconciled::PurgeRewound { .. }), "{r:?}");
    drop(log);
    drop(db);
    let db = open_db(&dir);
    let mut log = LogStore::open(&db, CHANNEL).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 10)));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(1, 1))
    );
    assert_eq!(
        log.reconcile(Some(log_id(1, 10))).await.unwrap(),
        Reconciled::Consistent
    );

    // A commit index past the last entry (saved before the entries it names): lowered.
    log.append_durable((11..=14).map(|i| blank(1, i)))
        .await
        .unwrap();
    log.save_committed(Some(log_id(1, 20))).await.unwrap();
    let r = log.reconcile(Some(log_id(1, 10))).await.unwrap();
    assert_eq!(
        r,
        Reconciled::CommittedLowered {
            from: Some(log_id(1, 20)),
            to: Some(log_id(1, 14))
        }
    );
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 14)));
}
