//! Compiles the Durable Task protocol from `descriptors/durabletask.bin`, the
//! descriptor set of the Dapr Python SDK's own compiled protos (see
//! descriptors/README.md), client and server, so the wire format is exactly
//! the SDKs' and no `protoc` is needed.

use std::error::Error;

const DESCRIPTORS: &str = "descriptors/durabletask.bin";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={DESCRIPTORS}");
    let fds = <prost_types::FileDescriptorSet as prost::Message>::decode(
        &std::fs::read(DESCRIPTORS)?[..],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
