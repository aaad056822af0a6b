//! The orderer process (node start -> [process]): one startup path from a config file to a
//! running node and back, used by `orderer start` and by the harness alike, so the process a
//! test kills is the process an operator runs.

use std::path::Path;

use shared_proto::node_config::ConfigError;
use shared_proto::node_config::OrdererConfig;

use crate::node::NodeError;

/// Why the orderer process could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[cfg(feature = "failpoints")]
    #[error("{0}")]
    Failpoints(#[from] shared_proto::failpoints::FailpointsError),
    #[error(transparent)]
    Mutant(#[from] shared_proto::mutants::UnknownMutant),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Loads and validates the config at `path` (with `WEFT_ORDERER_*` overrides).
pub fn load_config(path: &Path) -> Result<OrdererConfig, ConfigError> {
    let config = OrdererConfig::load(path)?;
    config.validate()?;
    Ok(config)
}

/// Runs the orderer configured at `path` until SIGTERM or Ctrl-C, then stops it gracefully.
pub fn run_from_file(path: &Path, ansi: bool) -> Result<(), ProcessError> {
    let config = load_config(path)?;
    shared_proto::process::init_tracing(&config.log, ansi);
    #[cfg(feature = "failpoints")]
    shared_proto::failpoints::init_from_env()?;
    shared_proto::mutants::init_from_env()?;
    shared_proto::process::block_on_node(async {
        let listeners = crate::node::Listeners::bind(&config).await?;
        crate::node::run(config, listeners, shared_proto::process::terminate()).await?;
        Ok::<(), ProcessError>(())
    })
    .inspect_err(|e| tracing::error!(error = %e, "orderer stopped"))
}
