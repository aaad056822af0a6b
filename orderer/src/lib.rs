//! The ordering service node.
//!
//! ```text
//! client ─Broadcast─▶ [broadcast] verify envelope, Writers policy (config update: admins'
//!                        │ signatures, sequence, one consenter change), size, replay
//!                        │ follower: forward to the leader (Cluster.Forward)
//!                        ▼
//!                    [consensus::proposer] batch → Raft entry (bounded in flight)
//!                        ▼
//!                    [consensus] openraft log on fjall (fsync) → committed on a quorum
//!                        ▼
//!                    [consensus::state_machine] every node applies → [cutter] → block,
//!                        signed by this node → [block_store] (one atomic batch)
//!                        ▼
//! client ◀─Deliver── [deliver] SeekInfo, Readers policy, bounded per subscriber
//!
//! config block applied ─▶ [membership] leader: learner → voter, remove, re-address
//! operator ─Admin──────▶ [admin] status, list / join / remove channels ─▶ [runtime]
//!                        (channels start and stop while the node runs, each with its tasks)
//! ```
//!
//! Promises: a Broadcast answer of SUCCESS means the envelope is in a Raft entry committed by
//! a quorum (ordered, never lost); every node cuts the same blocks from the same entries, so
//! chains never fork; blocks a node lacks after a snapshot are pulled from other orderers and
//! verified (hash chain and signatures) before they are served. The channel config is
//! replicated state: it changes only when a config block is applied, identically on every
//! node, and every reader follows it live.

pub mod admin;
pub mod admin_client;
pub mod block_store;
pub mod broadcast;
pub mod catchup;
pub mod channels;
pub mod cli;
pub mod consensus;
pub mod cutter;
pub mod deliver;
pub mod failpoints;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod process;
pub mod runtime;
pub mod services;

pub use node::run;
pub use node::Listeners;
pub use node::Node;
pub use node::NodeError;
