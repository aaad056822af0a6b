//! The box's raw limits, measured in the same run as the benchmark they bound.
//!
//! - **Ed25519 verify / s / core**: one thread, `verify_strict` (what `signing::verify` uses
//!   for envelope signatures) over 64 distinct 1 KiB messages in a loop for ~300 ms.
//! - **Ed25519 batch verify / s / core**: one thread, `ed25519_dalek::verify_batch` over
//!   batches of 64 signatures by 64 keys (1 KiB messages), for ~300 ms; signatures per second.
//! - diagnostic: the same with batches of 2 (what peer validation batches per transaction).
//! - **fsync / s**: append 4 KiB to a file in the benchmark's data directory and
//!   `File::sync_data` (fdatasync), in a loop for ~500 ms.

use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use ed25519_dalek::Signature;
use ed25519_dalek::Signer as _;
use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;
use serde_json::json;
use serde_json::Value;

/// Signatures per batch in the batch measurement.
pub const BATCH: usize = 64;
const MESSAGE_BYTES: usize = 1024;
const CPU_WINDOW: Duration = Duration::from_millis(300);
const FSYNC_WINDOW: Duration = Duration::from_millis(500);

/// What the box allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawLimits {
    pub cores: usize,
    pub verify_per_s_per_core: f64,
    pub batch_verify_per_s_per_core: f64,
    /// Diagnostic: `verify_batch` with batches of 2 (a transaction's two endorsements, which
    /// is what peer validation batches today).
    pub batch2_verify_per_s_per_core: f64,
    pub fsync_per_s: f64,
}

impl RawLimits {
    /// Measures everything; the fsync test writes into `data_dir`.
    pub fn measure(data_dir: &Path) -> anyhow::Result<Self> {
        let fixture = Fixture::new();
        // One untimed pass so the first measurement does not pay for page faults.
        fixture.verify_single(Duration::from_millis(30))?;
        Ok(RawLimits {
            cores: super::cores(),
            verify_per_s_per_core: fixture.verify_single(CPU_WINDOW)?,
            batch_verify_per_s_per_core: fixture.verify_batches(CPU_WINDOW, BATCH)?,
            batch2_verify_per_s_per_core: fixture.verify_batches(CPU_WINDOW, 2)?,
            fsync_per_s: fsync_rate(data_dir, FSYNC_WINDOW)?,
        })
    }

    /// The `raw` object of the report.
    pub fn json(&self) -> Value {
        json!({
            "ed25519_verify_per_s_per_core": self.verify_per_s_per_core.round(),
            "ed25519_batch_verify_per_s_per_core": self.batch_verify_per_s_per_core.round(),
            "fsync_per_s": self.fsync_per_s.round(),
            "ed25519_batch2_verify_per_s_per_core": self.batch2_verify_per_s_per_core.round(),
            "cores": self.cores,
        })
    }
}

/// 64 keys, each with a 1 KiB message and its signature.
struct Fixture {
    keys: Vec<VerifyingKey>,
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
}

impl Fixture {
    fn new() -> Self {
        let mut keys = Vec::with_capacity(BATCH);
        let mut messages = Vec::with_capacity(BATCH);
        let mut signatures = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let mut seed = [0x5Au8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let key = SigningKey::from_bytes(&seed);
            let message: Vec<u8> = (0..MESSAGE_BYTES).map(|j| (i * 31 + j) as u8).collect();
            signatures.push(key.sign(&message));
            keys.push(key.verifying_key());
            messages.push(message);
        }
        Fixture {
            keys,
            messages,
            signatures,
        }
    }

    /// Single `verify_strict` calls per second on this thread.
    fn verify_single(&self, window: Duration) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut done: u64 = 0;
        while started.elapsed() < window {
            for i in 0..BATCH {
                black_box(&self.keys[i])
                    .verify_strict(black_box(&self.messages[i]), &self.signatures[i])
                    .context("raw fixture signature does not verify")?;
            }
            done += BATCH as u64;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    }

    /// Signatures per second verified by `verify_batch` in batches of `size` (at most
    /// [`BATCH`]), this thread.
    fn verify_batches(&self, window: Duration, size: usize) -> anyhow::Result<f64> {
        let size = size.clamp(1, BATCH);
        let messages: Vec<&[u8]> = self.messages.iter().map(Vec::as_slice).collect();
        let started = Instant::now();
        let mut done: u64 = 0;
        while started.elapsed() < window {
            for at in (0..BATCH - size + 1).step_by(size) {
                let range = at..at + size;
                ed25519_dalek::verify_batch(
                    black_box(&messages[range.clone()]),
                    black_box(&self.signatures[range.clone()]),
                    black_box(&self.keys[range]),
                )
                .context("raw fixture batch does not verify")?;
                done += size as u64;
            }
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    }
}

/// Appends of 4 KiB, each followed by `sync_data`, per second, in `dir`.
fn fsync_rate(dir: &Path, window: Duration) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0xA5u8; 4096];
    let started = Instant::now();
    let mut done: u64 = 0;
    while started.elapsed() < window {
        file.write_all(&block).context("fsync probe write")?;
        file.sync_data().context("fsync probe sync_data")?;
        done += 1;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}
