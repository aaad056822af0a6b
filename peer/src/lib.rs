//! The peer: receives blocks, validates and commits them, and serves applications.
//!
//! ```text
//! orderers ─Deliver─▶ [deliver_client] (on the org's elected leader) fail over between orderers
//! org peers ─gossip─▶ [gossip] signed membership, push, pull, reorder buffer
//!                        ▼
//!                     [commit] verify block (number, hash chain, data hash,
//!                        orderer signatures vs BlockValidation, last_config_index),
//!                        same for both sources, under the config in force
//!                        ▼
//!                     [validate] per tx in parallel: creator, endorsements, policy;
//!                        then in order: duplicate tx id, MVCC reads, phantoms
//!                     or, for a config block, [channel_config] check the update against
//!                        the config in force; if valid, switch it after the commit
//!                        ▼
//!                     [ledger] one atomic batch: block + codes + state + tx index + savepoint
//!                        ▼
//! applications ◀───── [events] blocks / filtered blocks, commit status
//! applications ─────▶ [endorser] simulate [chaincode] on [simulator], sign the rwset
//! operators ─JoinChannel─▶ [participation] authorise against the genesis block's config
//!                        ▼
//!                     [runtime] record the block, open the channel's ledger and committer,
//!                        start its gossip tasks (each channel owns its tasks)
//! ```
//!
//! Promises: only blocks signed by the orderers per the channel's BlockValidation policy and
//! linked to the previous block are committed, whichever path brought them; invalid transactions stay in the block with
//! their code and never change state; a crash never leaves half a block.

pub mod chaincode;
pub mod channel_config;
pub mod channels;
pub mod commit;
pub mod deliver_client;
pub mod endorser;
pub mod events;
pub mod failpoints;
pub mod gossip;
pub mod ledger;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod participation;
pub mod process;
pub mod query;
pub mod runtime;
pub mod sdk;
pub mod services;
pub mod simulator;
pub mod validate;

pub use node::run;
pub use node::Listeners;
pub use node::Node;
pub use node::NodeError;
