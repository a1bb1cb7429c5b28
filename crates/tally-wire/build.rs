//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! the tonic services; also writes the descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The protos stay at the repository's top level (the client's layout);
    // this crate compiles them.
    let protos = [
        "../../proto/tally/v1/snapshots.proto",
        "../../proto/tally/v1/alerts.proto",
        "../../proto/tally/v1/operations.proto",
        "../../proto/tally/v1/trace.proto",
        "../../proto/tally/v1/audit.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["../../proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tally_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // `bytes` fields as `bytes::Bytes`: chunks of leaves are sliced from the
    // receive buffer instead of copied.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
