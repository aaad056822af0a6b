//! What both node processes do around their node, defined once: logging set up from the node
//! config (`RUST_LOG` overrides the level), the stop signal (SIGTERM or Ctrl-C), and durable
//! small-file writes (the records of joined channels).

use crate::node_config::LogSettings;

/// Installs the process's tracing subscriber: `RUST_LOG` if set, else `log.level`; JSON lines
/// when `log.format` is `json`. Colour only when `ansi` (a terminal). A second call does
/// nothing.
pub fn init_tracing(log: &LogSettings, ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Completes on SIGTERM or Ctrl-C: when a node process must stop gracefully.
pub async fn terminate() {
    #[cfg(unix)]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `node` on a fresh multi-threaded runtime until it returns, then gives the runtime one
/// second to end what is left (storage is durable by then: a connection being torn down must
/// not hold the exit).
pub fn block_on_node<T, E: From<std::io::Error>>(
    node: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(node);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Writes `bytes` to `path` so that after a crash the file is either absent or whole: a
/// temporary file, fsynced, renamed over `path`, and the directory fsynced.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
