//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates tonic clients and servers, plus the encoded descriptor set that
//! the node's gRPC reflection service publishes.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/shadowstore/v1/shadowstore.proto", "proto/shadowstore/v1/peer.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("shadowstore_descriptor.bin"), fds.encode_to_vec())?;
    // The client messages serialize to JSON for the node's dashboard
    // (`node/src/operator/dashboard.rs`), which serves the same answers
    // as the gRPC API.
    tonic_prost_build::configure()
        .bytes(".shadowstore")
        .type_attribute(".shadowstore.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
