#!/usr/bin/env bash
# THE dapr-rs test command (what the README and .ci/run use):
#   1. start/reuse the backing servers on 127.0.0.1 (scripts/test-services.sh)
#   2. build every binary, so integration tests can launch target/debug/daprd & co
#   3. run the whole workspace's tests (debug profile)
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -p daprd -- state`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-services.sh
# e2e tests share one Kubernetes cluster (e2e/k8s/cluster.sh), started on first use; stop it at the end.
trap 'bash e2e/k8s/cluster.sh down || true' EXIT
cargo build --workspace --bins
# --no-fail-fast: one failing test binary must not hide the others.
cargo test --workspace --no-fail-fast "$@"
