//! Failpoints of the peer (harness builds only: feature `failpoints`): where the chaos harness
//! crashes the process or fails a write, before and after each durable step.
//!
//! | name                        | where                                                                     |
//! |-----------------------------|---------------------------------------------------------------------------|
//! | `peer::commit_batch::before` | a verified, validated block's batch (block + codes + state + index + savepoint) about to be written |
//! | `peer::commit_batch::after`  | the batch written and fsynced, the height not yet advanced (no event sent) |
//!
//! Actions (`crash`, `error`, and the `fail` crate's own) and the `FAILPOINTS` syntax:
//! `shared_proto::failpoints`; they are armed once in [`crate::process`]. An `error` travels
//! the commit's normal error path (`CommitError::Ledger`), which stops the peer
//! (`NodeError::Fatal`) instead of letting it go on past a block it may not hold.
//!
//! Call sites are one line, `failpoint!("peer::STEP::WHEN", to_err)`, where `to_err` turns the
//! injected `std::io::Error` into an error that converts (`Into`) to the error type of the
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
