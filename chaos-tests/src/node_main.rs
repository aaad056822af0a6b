//! Running one node in this process: what `devnet node …` and `bench node …` do in the child
//! processes the [`crate::launcher`] starts.

use std::path::Path;

/// Runs an orderer or a peer (`kind`) from its config file until SIGTERM or Ctrl-C.
pub fn run_node(kind: &str, config: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match kind {
        "orderer" => {
            let cfg = shared_proto::node_config::OrdererConfig::load(config)?;
            cfg.validate()?;
            init_tracing(&cfg.log.level);
            rt.block_on(async {
                let listeners = orderer::Listeners::bind(&cfg).await?;
                orderer::run(cfg, listeners, terminate()).await?;
                anyhow::Ok(())
            })
        }
        "peer" => {
            let cfg = shared_proto::node_config::PeerConfig::load(config)?;
            cfg.validate()?;
            init_tracing(&cfg.log.level);
            let chaincodes = peer::chaincode::ChaincodeRegistry::with_samples();
            rt.block_on(async {
                let listeners = peer::Listeners::bind(&cfg).await?;
                peer::run(cfg, listeners, chaincodes, terminate()).await?;
                anyhow::Ok(())
            })
        }
        other => anyhow::bail!("unknown node kind {other:?}; expected orderer or peer"),
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .init();
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn terminate() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
