//! An in-memory [`StateReader`] for unit tests: a map of (namespace, key) → versioned value.
//! It can be told to fail every read, to test storage-error paths.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ledger::{LedgerError, StateReader, Version, VersionedValue};

#[derive(Debug, Default)]
pub(crate) struct MemState {
    entries: Mutex<BTreeMap<(String, String), VersionedValue>>,
    failing: Mutex<bool>,
}

impl MemState {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in `namespace` as written by tx `(block, tx)`.
    pub(crate) fn set(&self, namespace: &str, key: &str, value: &[u8], block: u64, tx: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            (namespace.to_owned(), key.to_owned()),
            VersionedValue {
                value: value.to_vec(),
                version: Version {
                    block_num: block,
                    tx_num: tx,
                },
            },
        );
    }

    /// Makes every later read fail with a corruption error.
    pub(crate) fn fail_reads(&self) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    fn check(&self) -> Result<(), LedgerError> {
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(LedgerError::Corrupt {
                what: "test state".to_owned(),
                reason: "told to fail".to_owned(),
            });
        }
        Ok(())
    }
}

impl StateReader for MemState {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError> {
        self.check()?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned())
    }

    fn range(
        &self,
        namespace: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        self.check()?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries
            .range((namespace.to_owned(), start.to_owned())..)
            .take_while(|((ns, key), _)| ns == namespace && (end.is_empty() || key.as_str() < end))
            .take(limit)
            .map(|((_, key), v)| (key.clone(), v.clone()))
            .collect())
    }

    fn has_tx(&self, _tx_id: &str) -> Result<bool, LedgerError> {
        self.check()?;
        Ok(false)
    }
}
