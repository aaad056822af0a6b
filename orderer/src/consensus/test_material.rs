//! Network material for the consensus unit tests: one orderer, one channel, in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;

pub const CHANNEL: &str = "smchannel";

const SPEC: &str = r#"
name = "sm"
[[orderer_orgs]]
msp_id = "OrdererMSP"
[[orderer_orgs.orderers]]
name = "orderer1"
port = 7050
cluster_port = 7051
ops_port = 7052
[[peer_orgs]]
msp_id = "Org1MSP"
[[peer_orgs.peers]]
name = "peer0"
port = 7060
gossip_port = 7061
ops_port = 7062
[[channels]]
id = "smchannel"
"#;

/// Generated material and the temp dir holding it (kept alive by the caller).
pub fn generate() -> (tempfile::TempDir, Generated) {
    let dir = tempfile::tempdir().unwrap();
    let spec = NetworkSpec::from_toml(SPEC).unwrap();
    let generated = material::generate(&spec, &dir.path().join("net"), 1_790_000_000).unwrap();
    (dir, generated)
}
