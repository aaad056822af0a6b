//! The block store's height never moves backwards, even when catch-up (storing pulled blocks)
//! and the state machine (committing cut blocks) advance it at the same time.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use orderer::block_store::BlockStore;
use shared_proto::block;

#[test]
fn height_never_moves_backwards_when_two_writers_advance_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let store = BlockStore::open(&db, "ch").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // A second writer recomputing the height over and over (as the state machine does after
    // each commit while catch-up stores blocks).
    let advancer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                store.advance().unwrap();
            }
        })
    };
    let watcher = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = 0;
            let mut backwards = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let h = store.height();
                if h < last {
                    backwards.push((last, h));
                }
                last = last.max(h);
            }
            backwards
        })
    };
    let mut previous = Vec::new();
    for n in 0..3_000u64 {
        let b = block::new_block(n, previous.clone(), vec![n.to_be_bytes().to_vec()], 0);
        previous = block::header_hash(&b).unwrap().to_vec();
        store.put(n, &b).unwrap();
        assert!(
            store.height() > n,
            "height {} after storing block {n}",
            store.height()
        );
    }
    done.store(true, Ordering::SeqCst);
    advancer.join().unwrap();
    let backwards = watcher.join().unwrap();
    assert!(
        backwards.is_empty(),
        "height moved backwards {} times, e.g. {:?}",
        backwards.len(),
        &backwards[..backwards.len().min(5)]
    );
    assert_eq!(store.height(), 3_000);
}

/// After a snapshot install the store holds blocks past a gap (the state machine's) before
/// catch-up fills it: the height is the contiguous prefix, at open as well as while writing.
#[test]
fn blocks_past_a_gap_count_only_once_the_gap_is_filled_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let blocks: Vec<_> = (0..10u64)
        .map(|n| block::new_block(n, vec![n as u8; 32], vec![n.to_be_bytes().to_vec()], 0))
        .collect();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let store = BlockStore::open(&db, "ch").unwrap();
        for n in (0..5).chain(7..10) {
            store.put(n, &blocks[n as usize]).unwrap();
        }
        assert_eq!(store.height(), 5, "blocks 7..10 wait for 5 and 6");
    }
    let db = fjall::Database::builder(dir.path()).open().unwrap();
    let store = BlockStore::open(&db, "ch").unwrap();
    assert_eq!(
        store.height(),
        5,
        "reopened: still the prefix up to the gap"
    );
    store.put(6, &blocks[6]).unwrap();
    assert_eq!(store.height(), 5);
    store.put(5, &blocks[5]).unwrap();
    assert_eq!(store.height(), 10, "the gap filled: every block counts");
}
