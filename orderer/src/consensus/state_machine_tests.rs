//! Snapshots of the state machine: a snapshot is never replaced by an older one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::CommittedLeaderId;
use prost::Message as _;

use super::super::test_material;
use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    db_path: std::path::PathBuf,
    genesis: Block,
    signer: Arc<SigningIdentity>,
    limits: BatchLimits,
}

fn fixture() -> Fixture {
    let (dir, generated) = test_material::generate();
    let genesis =
        Block::decode(std::fs::read(&generated.channels[0].1).unwrap().as_slice()).unwrap();
    let o = &generated.orderers[0];
    let signer = Arc::new(
        SigningIdentity::from_pem_files(
            &o.msp_id,
            &o.dir.join("msp/cert.pem"),
            &o.dir.join("msp/key.pem"),
        )
        .unwrap(),
    );
    let channel = shared_proto::channel::Channel::from_config_block(&genesis).unwrap();
    Fixture {
        db_path: dir.path().join("ledger"),
        _dir: dir,
        genesis,
        signer,
        limits: BatchLimits::from_config(&channel.batch_size()),
    }
}

fn open(f: &Fixture) -> (Database, StateMachine) {
    let db = Database::builder(&f.db_path).open().unwrap();
    let store = BlockStore::open(&db, test_material::CHANNEL).unwrap();
    let sm = StateMachine::open(
        store,
        test_material::CHANNEL,
        &f.genesis,
        f.signer.clone(),
        f.limits,
    )
    .unwrap();
    (db, sm)
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn envelopes_entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Envelopes(vec![serde_bytes::ByteBuf::from(
            format!("envelope {index}").into_bytes(),
        )])),
    }
}

/// A snapshot build started at index 3 finishes after a snapshot of index 50 was installed.
/// Before the fix the build wrote its older snapshot over the installed one; the node then
/// restarted from index 3 while its log had been purged up to 50, and could not recover.
#[tokio::test]
async fn slow_snapshot_build_never_overwrites_a_newer_installed_snapshot() {
    let f = fixture();
    let (db, mut sm) = open(&f);
    sm.apply((1..=3).map(envelopes_entry)).await.unwrap();
    let mut slow_build = sm.get_snapshot_builder().await;

    let mut newer = sm.state.clone();
    newer.last_applied = Some(log_id(50));
    newer.next_block = 40;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(50)),
        last_membership: StoredMembership::default(),
        snapshot_id: "installed-50".into(),
    };
    sm.install_snapshot(&meta, Box::new(Cursor::new(encode(&newer).unwrap())))
        .await
        .unwrap();

    let built = slow_build.build_snapshot().await.unwrap();
    assert_eq!(
        built.meta.last_log_id,
        Some(log_id(50)),
        "the late build must hand back the newer snapshot"
    );

    // kill -9 and restart: the state machine resumes from the durable snapshot.
    drop(slow_build);
    drop(sm);
    drop(db);
    let (_db, mut sm) = open(&f);
    assert_eq!(sm.state.last_applied, Some(log_id(50)));
    assert_eq!(sm.state.next_block, 40);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(log_id(50)));
}
