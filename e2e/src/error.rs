//! The harness's one error type.

use std::path::PathBuf;

/// What can go wrong while driving the cluster from a test.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("cluster script {script} {action} failed ({status}); its log is above")]
    Script {
        script: PathBuf,
        action: String,
        status: std::process::ExitStatus,
    },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubectl {args} failed ({status}): {stderr}")]
    Kubectl {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("unexpected output of {what}: {message}")]
    Output { what: String, message: String },
    #[error("timed out after {secs} s waiting for {what}; last observation: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("this needs the tier-2 cluster (nodes, containerd); Cluster::tier1() was asked for")]
    NeedsTier2,
}
