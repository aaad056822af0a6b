//! Operator client of the orderers (`orderer admin`): what the CLI, the tests and the dev
//! network call to look at and change a running network.
//!
//! ```text
//! network material (devnet generate) ─▶ [material] orderers by name, node ids, admins, TLS
//!                                        │
//!   status, channel list/join/remove ───▶ [rpc] Admin service: ORDERER_ADMIN envelope signed
//!                                        │      by the node's org admin, over mutual TLS
//!   config show ────────────────────────▶ [rpc] Deliver: newest block → last_config_index →
//!                                        │      config block → Channel  ([config_view]: JSON)
//!   consenter add/remove/replace,       ▶ [change] next config (sequence + 1), signed by every
//!   config update                               org admin of the material → Submit to any
//!                                               orderer (retried while UNAVAILABLE) → wait for
//!                                               the leader to report the new sequence and voters
//! ```
//!
//! Promises: every call and every wait has a deadline; every error names the node, the call
//! and, for a refusal, the orderer's gRPC status and message unchanged.

pub mod change;
pub mod config_view;
pub mod material;
pub mod rpc;

pub use change::Applied;
pub use change::ConsenterOp;
pub use change::StatusView;
pub use material::Network;
pub use material::OrdererNode;
pub use rpc::CurrentConfig;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("{dir} is not network material (`devnet generate` output): {reason}")]
    Material { dir: String, reason: String },
    #[error("no orderer named {name:?} in {dir}; the network has: {known}")]
    UnknownNode {
        name: String,
        dir: String,
        known: String,
    },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("no Admin user of {msp_id} in {dir} (orgs/{msp_id}/users/Admin)")]
    NoAdmin { msp_id: String, dir: String },
    #[error("cannot dial {node} at {address}: {reason}")]
    Connect {
        node: String,
        address: String,
        reason: String,
    },
    #[error("{node} ({address}) refused {call}: {code_name}: {message}")]
    Refused {
        node: String,
        address: String,
        call: &'static str,
        code: tonic::Code,
        code_name: &'static str,
        message: String,
    },
    #[error("{node}: {call} answered with {reason}")]
    BadAnswer {
        node: String,
        call: &'static str,
        reason: String,
    },
    #[error("no orderer answered {what}:\n  {tried}")]
    NoneAnswered { what: String, tried: String },
    #[error("{what} not seen within {secs} s; last seen:\n  {seen}")]
    Timeout {
        what: String,
        secs: u64,
        seen: String,
    },
    #[error("{0}")]
    Change(String),
    #[error(transparent)]
    View(#[from] config_view::ConfigViewError),
}

impl AdminClientError {
    /// The orderer's gRPC status code when this is its refusal.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            AdminClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Now, in Unix milliseconds (request timestamps).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
