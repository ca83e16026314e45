//! Code generation for dapr-rs's gRPC surface.
//!
//! 1. The *server* side of `dapr.proto.runtime.v1` (the `Dapr` and
//!    `AppCallback*` services) from the descriptor set the `dapr` crate was
//!    generated from, with default `Unimplemented` bodies, reusing the `dapr`
//!    crate's message types so the wire format is Dapr's exactly.
//! 2. Every `.proto` under `protos/` (control-plane and internal services,
//!    written with Dapr's package names and field numbers), client and
//!    server, compiled with protox (no `protoc` needed). Imports of Dapr's
//!    common/runtime protos resolve against the same descriptor set.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use protox::file::{
    ChainFileResolver, DescriptorSetFileResolver, GoogleFileResolver, IncludeFileResolver,
};

const DESCRIPTORS: &str = "descriptors/dapr-runtime.bin";
const PROTOS: &str = "protos";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={DESCRIPTORS}");
    println!("cargo:rerun-if-changed={PROTOS}");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let dapr_fds =
        <prost_types::FileDescriptorSet as prost::Message>::decode(&fs::read(DESCRIPTORS)?[..])?;

    let stubs = out.join("dapr_stubs");
    fs::create_dir_all(&stubs)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .out_dir(&stubs)
        .extern_path(".dapr.proto.runtime.v1", "::dapr::dapr::proto::runtime::v1")
        .extern_path(".dapr.proto.common.v1", "::dapr::dapr::proto::common::v1")
        .extern_path(".google.rpc", "::dapr::google::rpc")
        .compile_fds(dapr_fds.clone())?;

    let generated = out.join("protos");
    fs::create_dir_all(&generated)?;
    let mut files = Vec::new();
    find_protos(Path::new(PROTOS), &mut files)?;
    files.sort();
    if files.is_empty() {
        fs::write(generated.join("mod.rs"), "")?;
        return Ok(());
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(IncludeFileResolver::new(PathBuf::from(PROTOS)));
    resolver.add(GoogleFileResolver::new());
    resolver.add(DescriptorSetFileResolver::new(dapr_fds));
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(PROTOS)
                .unwrap_or(f)
                .to_string_lossy()
                .trim_start_matches('/')
                .to_owned()
        })
        .collect();
    compiler.open_files(&names)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .out_dir(&generated)
        .include_file("mod.rs")
        .extern_path(".dapr.proto.runtime.v1", "::dapr::dapr::proto::runtime::v1")
        .extern_path(".dapr.proto.common.v1", "::dapr::dapr::proto::common::v1")
        .extern_path(".google.rpc", "::dapr::google::rpc")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

fn find_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
