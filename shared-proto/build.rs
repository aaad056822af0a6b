//! Compiles `proto/*.proto` with protox (pure Rust) and generates prost + tonic code.
//! No system `protoc` is used or needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/common.proto",
        "proto/msp.proto",
        "proto/transaction.proto",
        "proto/config.proto",
        "proto/orderer.proto",
        "proto/peer.proto",
        "proto/chaincode.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
