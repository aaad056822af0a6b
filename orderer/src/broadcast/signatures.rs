//! Broadcast's creator signatures, verified in batches across every stream of the node.
//!
//! Each envelope's checks run on its own task; instead of verifying its creator's signature
//! there, the task hands it to [`SignatureBatcher`] and waits for its verdict. One collector
//! takes whatever signatures are waiting (up to [`BATCH_MAX`]) whenever a verifier slot is
//! free, and verifies them on a blocking thread with
//! [`shared_proto::signature_batch::verify_each`]: one ed25519 batch, each signature answered
//! as it would be alone. With little load a batch holds one signature and nothing waits;
//! under load the slots are busy and batches fill while they are. No timer: a signature
//! never waits for others to arrive.
//!
//! Bounds: [`QUEUE_MAX`] signatures wait at most (then submitters wait for room), one batch
//! holds at most [`BATCH_MAX`], and at most one batch per core verifies at once.

use std::sync::Arc;
use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::PendingSignature;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::Semaphore;

/// Signatures in one batch.
pub const BATCH_MAX: usize = 64;
/// Signatures waiting for a verifier, node-wide.
pub const QUEUE_MAX: usize = 4 * 1024;

/// Why a signature has no verdict of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignatureCheckError {
    #[error("{0}")]
    Refused(#[from] EnvelopeError),
    #[error("the signature verifier stopped (the node is shutting down)")]
    Stopped,
}

struct Job {
    signature: PendingSignature,
    verdict: oneshot::Sender<Result<(), EnvelopeError>>,
}

/// The node's signature batcher; its collector starts on first use (inside the runtime).
pub struct SignatureBatcher {
    queue: OnceLock<mpsc::Sender<Job>>,
    counts: Counts,
}

/// Signatures and batches verified (their ratio is the mean batch).
#[derive(Debug, Clone, Default)]
struct Counts {
    signatures: Counter,
    batches: Counter,
}

impl std::fmt::Debug for SignatureBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureBatcher")
            .field("signatures", &self.counts.signatures.get())
            .field("batches", &self.counts.batches.get())
            .finish_non_exhaustive()
    }
}

impl SignatureBatcher {
    /// A batcher counting into these metrics (signatures verified, batches).
    pub fn new(signatures: Counter, batches: Counter) -> Self {
        SignatureBatcher {
            queue: OnceLock::new(),
            counts: Counts {
                signatures,
                batches,
            },
        }
    }

    /// `Ok` exactly when `signature` verifies, as [`PendingSignature::verify`] would say.
    pub async fn verify(&self, signature: PendingSignature) -> Result<(), SignatureCheckError> {
        let queue = self
            .queue
            .get_or_init(|| spawn_collector(self.counts.clone()));
        let (verdict, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = queue.send(Job { signature, verdict }).await {
            // The collector is gone (the runtime is stopping): verify here.
            return Ok(job.signature.verify()?);
        }
        // The collector answers every job it takes; no answer means the runtime is stopping.
        Ok(answer.await.map_err(|_| SignatureCheckError::Stopped)??)
    }
}

fn spawn_collector(counts: Counts) -> mpsc::Sender<Job> {
    let (queue, jobs) = mpsc::channel(QUEUE_MAX);
    let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::spawn(collect(jobs, Arc::new(Semaphore::new(slots)), counts));
    queue
}

async fn collect(mut jobs: mpsc::Receiver<Job>, slots: Arc<Semaphore>, counts: Counts) {
    loop {
        // Wait for a free verifier first: signatures that arrive meanwhile join the batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counts.signatures.inc_by(batch.len() as u64);
        counts.batches.inc();
        tokio::task::spawn_blocking(move || {
            let signatures: Vec<&PendingSignature> = batch.iter().map(|j| &j.signature).collect();
            let verdicts = shared_proto::signature_batch::verify_each(&signatures);
            for (job, verdict) in batch.into_iter().zip(verdicts) {
                let _ = job.verdict.send(verdict);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use shared_proto::signature_batch::signed_with_seed as signed;

    use super::*;

    /// Many envelopes at once share batches, and the one forged signature among them is the
    /// only one refused, with its own signer named.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_signatures_share_batches_and_only_the_forged_one_is_refused() {
        let (signatures, batches) = (Counter::default(), Counter::default());
        let batcher = Arc::new(SignatureBatcher::new(signatures.clone(), batches.clone()));
        let forged = 77;
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let batcher = batcher.clone();
                let mut pending = signed((i % 250) as u8 + 1, &i.to_be_bytes());
                if i == forged {
                    pending.message = b"other bytes".to_vec();
                }
                tokio::spawn(async move { batcher.verify(pending).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let verdict = task.await.expect("verify task");
            if i as u32 == forged {
                assert!(
                    matches!(
                        &verdict,
                        Err(SignatureCheckError::Refused(EnvelopeError::BadSignature { subject, .. }))
                            if subject == "signer 78"
                    ),
                    "forged signature answered {verdict:?}"
                );
            } else {
                assert!(verdict.is_ok(), "signature {i}: {verdict:?}");
            }
        }
        assert_eq!(signatures.get(), 200);
        assert!(
            batches.get() <= 200 / 2,
            "{} batches for 200 signatures submitted together",
            batches.get()
        );
    }
}
