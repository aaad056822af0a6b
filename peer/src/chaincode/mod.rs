//! Chaincode: the contracts endorsers simulate, and how they are run.
//!
//! - [`Stub`]: what a contract sees of the ledger (get/put/delete/range in its own namespace,
//!   the tx id, the creator's MSP id). The peer's implementation is
//!   [`TxSimulator`](crate::simulator::TxSimulator), which records a read/write set.
//! - [`Chaincode`]: a contract. In-process contracts ([`kv::KvChaincode`],
//!   [`token::TokenChaincode`]) and external ones ([`external::ExternalChaincode`], chaincode as
//!   a service over gRPC, served by [`shim`]) implement the same trait.
//! - [`ChaincodeRegistry`]: name → (version, contract); the endorser checks the version against
//!   the channel's chaincode definition.
//! - [`invoke_isolated`]: runs one invocation in its own task with a time bound.
//!
//! Promises: a contract that panics or runs past its time bound yields an error
//! ([`ChaincodeError::Failed`] / [`ChaincodeError::Timeout`]), never a crashed peer; every
//! error has an HTTP-like status ([`ChaincodeError::status`]) for the proposal response.
//! Time bounds act at await points: a contract that blocks its thread without awaiting keeps
//! a worker busy until it returns (its result is then discarded).

pub mod external;
pub mod kv;
pub mod shim;
pub mod token;

#[cfg(test)]
pub(crate) mod mem_state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::simulator::TxSimulator;

/// The version the sample contracts are installed at by [`ChaincodeRegistry::with_samples`].
pub const SAMPLE_VERSION: &str = "1.0";

/// Why an invocation failed. [`ChaincodeError::status`] gives the response status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaincodeError {
    /// The request is at fault: bad or missing arguments, invalid key or value, a business
    /// rule refused it (e.g. insufficient funds). Status 400.
    #[error("{message}")]
    BadRequest { message: String },
    /// The contract failed for another reason (it panicked, returned an error status ≥ 500,
    /// broke the protocol). Status 500.
    #[error("{message}")]
    Failed { message: String },
    /// The contract has no such function. Status 400.
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    /// Reading committed state failed (storage error). Status 500.
    #[error("state access failed: {0}")]
    State(String),
    /// A per-transaction bound was exceeded (reads, writes, range size, state requests).
    /// Status 500.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The invocation ran longer than its time bound. Status 500.
    #[error("chaincode timed out after {0:?}")]
    Timeout(Duration),
    /// An external chaincode could not be reached, or its stream ended early. Status 503.
    #[error("chaincode unavailable: {0}")]
    Unavailable(String),
}

impl ChaincodeError {
    /// The HTTP-like status of the proposal response (Fabric's convention).
    pub fn status(&self) -> i32 {
        match self {
            ChaincodeError::BadRequest { .. } | ChaincodeError::UnknownFunction(_) => 400,
            ChaincodeError::Unavailable(_) => 503,
            ChaincodeError::Failed { .. }
            | ChaincodeError::State(_)
            | ChaincodeError::Limit(_)
            | ChaincodeError::Timeout(_) => 500,
        }
    }

    /// A 400 error with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ChaincodeError::BadRequest {
            message: message.into(),
        }
    }

    /// A 500 error with this message.
    pub fn failed(message: impl Into<String>) -> Self {
        ChaincodeError::Failed {
            message: message.into(),
        }
    }

    /// Rebuilds an error from a status and message, as an external contract reports them:
    /// 4xx becomes [`ChaincodeError::BadRequest`] (status 400), anything else
    /// [`ChaincodeError::Failed`] (status 500); the message is kept as the display text.
    pub fn from_status(status: i32, message: String) -> Self {
        let message = if message.is_empty() {
            format!("chaincode returned status {status}")
        } else {
            message
        };
        match status {
            400..=499 => ChaincodeError::BadRequest { message },
            _ => ChaincodeError::Failed { message },
        }
    }
}

/// What a contract sees of state: its own namespace in one transaction.
#[tonic::async_trait]
pub trait Stub: Send {
    /// The committed value of `key`, if any. A transaction does not see its own writes.
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ChaincodeError>;
    /// Sets `key` to `value` when the transaction commits.
    async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ChaincodeError>;
    /// Deletes `key` when the transaction commits.
    async fn delete(&mut self, key: &str) -> Result<(), ChaincodeError>;
    /// Committed keys in `[start, end)` in key order (`start` empty: from the first key,
    /// `end` empty: unbounded).
    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError>;
    /// The transaction's id.
    fn tx_id(&self) -> &str;
    /// The MSP id of the proposal's creator.
    fn creator_msp_id(&self) -> &str;
    /// The channel the transaction is for.
    fn channel_id(&self) -> &str;
}

/// A contract. `invoke` returns the response payload, or an error that becomes an error
/// response (the endorser then signs nothing).
#[tonic::async_trait]
pub trait Chaincode: Send + Sync {
    async fn invoke(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError>;
}

/// An installed contract: its version and implementation.
type Installed = (String, Arc<dyn Chaincode>);

/// Installed contracts by name, each with its version. Cheap to share (`Arc`) and safe to
/// register into while endorsements run.
#[derive(Default)]
pub struct ChaincodeRegistry {
    entries: RwLock<BTreeMap<String, Installed>>,
}

impl fmt::Debug for ChaincodeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        f.debug_map()
            .entries(entries.iter().map(|(name, (version, _))| (name, version)))
            .finish()
    }
}

impl ChaincodeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the sample contracts installed at [`SAMPLE_VERSION`]: `token`
    /// ([`token::TokenChaincode`]) and `kv` ([`kv::KvChaincode`]), as the sample network
    /// defines them.
    pub fn with_samples() -> Self {
        let registry = Self::new();
        registry.register("token", SAMPLE_VERSION, Arc::new(token::TokenChaincode));
        registry.register("kv", SAMPLE_VERSION, Arc::new(kv::KvChaincode));
        registry
    }

    /// Installs the peer config's external chaincodes (each connected lazily, invocations
    /// bounded by `timeout`), replacing in-process ones of the same name. Must be called
    /// within a tokio runtime; fails only on a malformed address.
    pub fn register_external(
        &self,
        configs: &[shared_proto::node_config::ExternalChaincode],
        timeout: Duration,
    ) -> Result<(), ChaincodeError> {
        for cc in configs {
            let external = external::ExternalChaincode::connect_lazy(&cc.address, timeout)?;
            self.register(cc.name.clone(), cc.version.clone(), Arc::new(external));
        }
        Ok(())
    }

    /// Installs (or replaces) the contract `name` at `version`; returns the version it
    /// replaced, if any.
    pub fn register(
        &self,
        name: impl Into<String>,
        version: impl Into<String>,
        chaincode: Arc<dyn Chaincode>,
    ) -> Option<String> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries
            .insert(name.into(), (version.into(), chaincode))
            .map(|(old, _)| old)
    }

    /// The installed version and contract for `name`.
    pub fn get(&self, name: &str) -> Option<(String, Arc<dyn Chaincode>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(name).cloned()
    }

    /// Installed names, sorted.
    pub fn names(&self) -> Vec<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.keys().cloned().collect()
    }
}

/// Runs one invocation on `stub` in the current task (no panic isolation, no time bound).
pub async fn execute(
    chaincode: &dyn Chaincode,
    stub: &mut TxSimulator,
    function: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, ChaincodeError> {
    chaincode.invoke(stub, function, args).await
}

/// Runs one invocation in its own tokio task, bounded by `timeout`.
///
/// Returns the simulator with what the invocation recorded, and its result. If the contract
/// panics (→ [`ChaincodeError::Failed`] "chaincode panicked: …") or exceeds `timeout`
/// (→ [`ChaincodeError::Timeout`], the task is aborted), the simulator moved into the task is
/// lost and an empty one for the same transaction is returned instead; the endorser sends an
/// error response then and needs no read/write set.
pub async fn invoke_isolated(
    chaincode: Arc<dyn Chaincode>,
    sim: TxSimulator,
    function: String,
    args: Vec<Vec<u8>>,
    timeout: Duration,
) -> (TxSimulator, Result<Vec<u8>, ChaincodeError>) {
    let fresh = sim.fresh();
    let mut task = tokio::spawn(async move {
        let mut sim = sim;
        let result = chaincode.invoke(&mut sim, &function, &args).await;
        (sim, result)
    });
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok((sim, result))) => (sim, result),
        Ok(Err(join)) => {
            let message = if join.is_panic() {
                format!("chaincode panicked: {}", panic_message(join.into_panic()))
            } else {
                "chaincode task was cancelled".to_owned()
            };
            (fresh, Err(ChaincodeError::Failed { message }))
        }
        Err(_elapsed) => {
            task.abort();
            (fresh, Err(ChaincodeError::Timeout(timeout)))
        }
    }
}

/// The text of a panic payload (`&str` or `String`), at most 256 characters.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    text.chars().take(256).collect()
}

/// Refuses a call unless it has exactly `n` arguments.
pub fn check_arity(function: &str, args: &[Vec<u8>], n: usize) -> Result<(), ChaincodeError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(ChaincodeError::bad_request(format!(
            "{function} takes {n} argument(s), got {}",
            args.len()
        )))
    }
}

/// Argument `index` as UTF-8, or a 400 error naming it `name`.
pub fn arg_str<'a>(
    args: &'a [Vec<u8>],
    index: usize,
    name: &str,
) -> Result<&'a str, ChaincodeError> {
    let raw = args
        .get(index)
        .ok_or_else(|| ChaincodeError::bad_request(format!("missing argument {name}")))?;
    std::str::from_utf8(raw)
        .map_err(|_| ChaincodeError::bad_request(format!("argument {name} is not valid UTF-8")))
}
