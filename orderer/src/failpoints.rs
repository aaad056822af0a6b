//! Failpoints of the orderer (harness builds only: feature `failpoints`): where the chaos
//! harness crashes the process or fails a write, before and after each durable step.
//!
//! | name                                   | where                                                                   |
//! |----------------------------------------|-------------------------------------------------------------------------|
//! | `orderer::raft_log_append::before`       | entries about to be written to the Raft log (nothing written)          |
//! | `orderer::raft_log_append::before_fsync` | entries written to the journal, not yet fsynced (an fsync `error` here) |
//! | `orderer::raft_log_append::after`        | entries fsynced, openraft not yet told they are durable                |
//! | `orderer::raft_vote_save::before`        | a vote about to be written                                             |
//! | `orderer::raft_vote_save::after`         | the vote fsynced, openraft not yet told                                |
//! | `orderer::sm_apply::before`              | a batch of committed entries about to be applied (nothing changed)     |
//! | `orderer::sm_apply::after`               | the batch applied and its blocks written, openraft not yet told        |
//! | `orderer::block_store_write::before`     | blocks the apply batch cut about to be written                         |
//! | `orderer::block_store_write::after`      | those blocks written (not fsynced: Raft re-applies after a crash), the height not advanced |
//! | `orderer::block_store_put::before`       | one block about to be written on its own (pulled by catch-up, or genesis) |
//! | `orderer::block_store_put::after`        | that block written, the height not advanced                            |
//! | `orderer::snapshot_build::before`        | a snapshot about to be built (blocks not yet fsynced)                  |
//! | `orderer::snapshot_build::after`         | the snapshot stored and fsynced, openraft not yet given it             |
//! | `orderer::snapshot_install::before`      | a received snapshot decoded, about to be stored                        |
//! | `orderer::snapshot_install::after`       | the snapshot stored and fsynced, the node's status not yet updated     |
//!
//! Actions (`crash`, `error`, and the `fail` crate's own) and the `FAILPOINTS` syntax:
//! `shared_proto::failpoints`; they are armed once in [`crate::process`]. An `error` travels
//! the step's normal error path: every one of these steps is under openraft, for which a
//! storage error is fatal, so the node stops (`NodeError::Fatal`) instead of going on with a
//! half-written state; catch-up reports a failed `put` as fatal too.
//!
//! Call sites are one line, `failpoint!("orderer::STEP::WHEN", to_err)`, where `to_err` turns
//! the injected `std::io::Error` into an error that converts (`Into`) to the error type of the
//! function around it. Without the feature a call site compiles to nothing.

/// A failpoint at a durable step: see the module doc.
macro_rules! failpoint {
    ($name:literal, $to_err:expr) => {
        #[cfg(feature = "failpoints")]
        shared_proto::failpoints::fail::fail_point!($name, |arg| Err(($to_err)(
            shared_proto::failpoints::fired($name, arg)
        )
        .into()));
    };
}

pub(crate) use failpoint;
