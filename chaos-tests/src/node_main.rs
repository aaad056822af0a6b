//! Running one node in this process: what `devnet node …` and `bench node …` do in the child
//! processes the [`crate::launcher`] starts.

use std::path::Path;

/// Runs an orderer or a peer (`kind`) from its config file until SIGTERM or Ctrl-C: the same
/// startup path as `orderer start` and `peer start` (`orderer::process`, `peer::process`).
pub fn run_node(kind: &str, config: &Path) -> anyhow::Result<()> {
    match kind {
        "orderer" => Ok(orderer::process::run_from_file(config, false)?),
        "peer" => Ok(peer::process::run_from_file(config, false)?),
        other => anyhow::bail!("unknown node kind {other:?}; expected orderer or peer"),
    }
}
