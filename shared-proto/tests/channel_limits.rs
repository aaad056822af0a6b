//! A channel config is refused when its limits could not be honoured by the orderers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shared_proto::channel::BYTES_ABSOLUTE_MAX_CEILING;
use shared_proto::material::generate;
use shared_proto::material::MaterialError;
use shared_proto::material::NetworkSpec;

const SAMPLE: &str = include_str!("../../deploy/sample-network.toml");

#[test]
fn bytes_absolute_max_above_the_ceiling_is_refused_naming_the_field() {
    let too_large = BYTES_ABSOLUTE_MAX_CEILING + 1;
    let spec = NetworkSpec::from_toml(&SAMPLE.replace(
        "bytes_absolute_max = 10485760",
        &format!("bytes_absolute_max = {too_large}"),
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = generate(&spec, dir.path(), 1_790_000_000).unwrap_err();
    assert!(matches!(err, MaterialError::Channel { .. }), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("orderer.batch_size.bytes_absolute_max") && source.contains("ceiling"),
        "{source}"
    );
    // At the ceiling it is accepted.
    let spec = NetworkSpec::from_toml(&SAMPLE.replace(
        "bytes_absolute_max = 10485760",
        &format!("bytes_absolute_max = {BYTES_ABSOLUTE_MAX_CEILING}"),
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    generate(&spec, dir.path(), 1_790_000_000).unwrap();
}
