//! Writes the `dapr.io` CRDs to `crds/generated/` and `charts/dapr/crds/`.
//! `cargo run -p dapr-crds --bin crdgen`; the `generated_yaml_is_fresh` test
//! fails when the committed files differ from what this writes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dirs = [root.join("generated"), root.join("../charts/dapr/crds")];
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
    }
    for crd in dapr_crds::crd::all() {
        // The chart's copy converts Subscriptions through the operator's webhook.
        for (dir, yaml) in dirs.iter().zip([crd.to_yaml()?, crd.to_chart_yaml()?]) {
            let path = dir.join(crd.file_name);
            std::fs::write(&path, &yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
