//! Replicated duplicate filter: the tx ids of the last `retry_window_txs` (channel config,
//! default 50,000) envelopes the state machine accepted (pending or already cut).
//!
//! A client that lost the answer to a Broadcast retries with the same envelope; if the first
//! attempt was committed, the retry must not be ordered again. The broadcast-time check of the
//! block store's tx index cannot see envelopes still pending in the cutter (or a lagging
//! node's blocks), so the state machine filters deterministically: every node holds the same
//! window (it is part of the state and of snapshots), so every node drops the same envelopes.
//! A repeat older than the window is refused by the tx index at Broadcast, and in the worst
//! case marked `DUPLICATE_TXID` by the peers.

use std::collections::HashSet;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

/// The last accepted tx ids (SHA-256 digests, as tx ids are hex of one), at most the channel's
/// window (50,000 by default: 1.6 MB in a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<[u8; 32]>", into = "Vec<[u8; 32]>")]
pub struct RecentTxIds {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl From<Vec<[u8; 32]>> for RecentTxIds {
    fn from(ids: Vec<[u8; 32]>) -> Self {
        let mut r = RecentTxIds::default();
        for id in ids {
            r.insert(id, usize::MAX);
        }
        r
    }
}

impl From<RecentTxIds> for Vec<[u8; 32]> {
    fn from(r: RecentTxIds) -> Self {
        r.order.into()
    }
}

impl RecentTxIds {
    /// The key of a tx id: its 32 bytes when it is 64 hex digits (always, for envelopes that
    /// passed Broadcast), else a hash of the text.
    pub fn key(tx_id: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        match hex::decode_to_slice(tx_id, &mut out) {
            Ok(()) => out,
            Err(_) => shared_proto::hash::sha256(tx_id.as_bytes()),
        }
    }

    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.set.contains(key)
    }

    /// Remembers `key`, forgetting the oldest beyond `window`.
    pub fn insert(&mut self, key: [u8; 32], window: usize) {
        if self.set.insert(key) {
            self.order.push_back(key);
            while self.order.len() > window.max(1) {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: usize = 50_000;

    #[test]
    fn window_forgets_oldest_and_round_trips_through_encoding() {
        let mut r = RecentTxIds::default();
        for i in 0..(WINDOW as u32 + 10) {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            r.insert(k, WINDOW);
        }
        assert_eq!(r.len(), WINDOW);
        let mut first = [0u8; 32];
        first[..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(!r.contains(&first));
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&(WINDOW as u32 + 9).to_be_bytes());
        assert!(r.contains(&last));
        let bytes = postcard::to_stdvec(&r).unwrap_or_default();
        let back: RecentTxIds = postcard::from_bytes(&bytes).unwrap_or_default();
        assert_eq!(back, r);
    }

    #[test]
    fn hex_tx_ids_map_to_their_bytes() {
        let id = "ab".repeat(32);
        assert_eq!(RecentTxIds::key(&id), [0xab; 32]);
        assert_ne!(RecentTxIds::key("not hex"), [0; 32]);
    }
}
