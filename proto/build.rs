//! Generates the *server* side of `dapr.proto.runtime.v1` (the `Dapr`, `AppCallback*`
//! services) from the descriptor set that the `dapr` crate was generated from, with
//! default `Unimplemented` bodies, while reusing the `dapr` crate's message types so
//! the wire format is Dapr's exactly.

use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let descriptors = "descriptors/dapr-runtime.bin";
    println!("cargo:rerun-if-changed={descriptors}");
    let fds =
        <prost_types::FileDescriptorSet as prost::Message>::decode(&fs::read(descriptors)?[..])?;
    let out = PathBuf::from(env::var("OUT_DIR")?).join("dapr_stubs");
    fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .out_dir(&out)
        .extern_path(".dapr.proto.runtime.v1", "::dapr::dapr::proto::runtime::v1")
        .extern_path(".dapr.proto.common.v1", "::dapr::dapr::proto::common::v1")
        .extern_path(".google.rpc", "::dapr::google::rpc")
        .compile_fds(fds)?;
    Ok(())
}
