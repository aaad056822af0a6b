//! Waiting for one transaction's commit, woken by its tx id: a block's commit wakes only the
//! waiters of its own transactions. `CommitStatus` used to wake every waiter at every block
//! and look each one's tx id up again: waiters × blocks lookups, a per-block cost that grew
//! with the number of clients waiting.
//!
//! A wait registers before the caller looks its tx id up, so a commit between the look and the
//! wait is not missed; it unregisters when dropped (answered, timed out, or its caller gone),
//! so what is registered is bounded by the callers' own bound on concurrent waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The registered waits of one ledger.
#[derive(Debug, Default)]
pub(super) struct TxWaiters {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next_key: u64,
    by_tx: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
}

impl TxWaiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Poisoning only means a waiter panicked while registering; the map is still whole.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn register(self: &Arc<Self>, tx_id: &str) -> TxWait {
        let (tx, rx) = oneshot::channel();
        let mut w = self.lock();
        let key = w.next_key;
        w.next_key = w.next_key.wrapping_add(1);
        w.by_tx.entry(tx_id.to_owned()).or_default().push((key, tx));
        TxWait {
            waiters: self.clone(),
            tx_id: tx_id.to_owned(),
            key,
            rx,
        }
    }

    /// Wakes the waits of `tx_ids` (called once their block is durable).
    pub(super) fn committed<'a>(&self, tx_ids: impl IntoIterator<Item = &'a str>) {
        let mut w = self.lock();
        if w.by_tx.is_empty() {
            return;
        }
        for id in tx_ids {
            for (_, tx) in w.by_tx.remove(id).into_iter().flatten() {
                let _ = tx.send(());
            }
        }
    }

    fn unregister(&self, tx_id: &str, key: u64) {
        let mut w = self.lock();
        if let Some(list) = w.by_tx.get_mut(tx_id) {
            list.retain(|(k, _)| *k != key);
            if list.is_empty() {
                w.by_tx.remove(tx_id);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn registered(&self) -> usize {
        self.lock().by_tx.values().map(Vec::len).sum()
    }
}

/// One registered wait ([`super::Ledger::wait_tx`]).
#[derive(Debug)]
pub struct TxWait {
    waiters: Arc<TxWaiters>,
    tx_id: String,
    key: u64,
    rx: oneshot::Receiver<()>,
}

impl TxWait {
    /// Resolves when a block holding the tx id is committed (true), or when the ledger is gone
    /// (false). Unbounded: callers put a deadline on it.
    pub async fn committed(&mut self) -> bool {
        (&mut self.rx).await.is_ok()
    }
}

impl Drop for TxWait {
    fn drop(&mut self) {
        self.waiters.unregister(&self.tx_id, self.key);
    }
}
