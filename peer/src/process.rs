//! The peer process (node start -> [process]): one startup path from a config file to a
//! running peer and back, used by `peer start` and by the harness alike, so the process a test
//! kills is the process an operator runs.

use std::path::Path;

use shared_proto::node_config::ConfigError;
use shared_proto::node_config::PeerConfig;

use crate::chaincode::ChaincodeError;
use crate::chaincode::ChaincodeRegistry;
use crate::node::NodeError;

/// Why the peer process could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("external chaincodes: {0}")]
    Chaincode(#[from] ChaincodeError),
    #[cfg(feature = "failpoints")]
    #[error("{0}")]
    Failpoints(#[from] shared_proto::failpoints::FailpointsError),
    #[error(transparent)]
    Mutant(#[from] shared_proto::mutants::UnknownMutant),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("{0}")]
    Node(#[from] NodeError),
}

/// Loads and validates the config at `path` (with `WEFT_PEER_*` overrides).
pub fn load_config(path: &Path) -> Result<PeerConfig, ConfigError> {
    let config = PeerConfig::load(path)?;
    config.validate()?;
    Ok(config)
}

/// The chaincodes a peer runs: the built-in samples and the config's external chaincodes.
pub fn chaincodes(config: &PeerConfig) -> Result<ChaincodeRegistry, ChaincodeError> {
    let registry = ChaincodeRegistry::with_samples();
    registry.register_external(&config.external_chaincodes, crate::endorser::INVOKE_TIMEOUT)?;
    Ok(registry)
}

/// Runs the peer configured at `path` until SIGTERM or Ctrl-C, then stops it gracefully.
pub fn run_from_file(path: &Path, ansi: bool) -> Result<(), ProcessError> {
    let config = load_config(path)?;
    shared_proto::process::init_tracing(&config.log, ansi);
    #[cfg(feature = "failpoints")]
    shared_proto::failpoints::init_from_env()?;
    shared_proto::mutants::init_from_env()?;
    shared_proto::process::block_on_node(async {
        let registry = chaincodes(&config)?;
        let listeners = crate::node::Listeners::bind(&config).await?;
        crate::node::run(
            config,
            listeners,
            registry,
            shared_proto::process::terminate(),
        )
        .await?;
        Ok::<(), ProcessError>(())
    })
    .inspect_err(|e| tracing::error!(error = %e, "peer stopped"))
}
