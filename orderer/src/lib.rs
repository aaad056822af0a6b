//! The ordering service node.
//!
//! ```text
//! client ─Broadcast─▶ [broadcast] verify envelope, Writers policy, size, replay
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
//! ```
//!
//! Promises: a Broadcast answer of SUCCESS means the envelope is in a Raft entry committed by
//! a quorum (ordered, never lost); every node cuts the same blocks from the same entries, so
//! chains never fork; blocks a node lacks after a snapshot are pulled from other orderers and
//! verified (hash chain and signatures) before they are served.

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
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod runtime;
pub mod services;

pub use node::run;
pub use node::Listeners;
pub use node::Node;
pub use node::NodeError;
