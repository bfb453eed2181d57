#!/usr/bin/env bash
# Install what the tests and `make dev` need, on a fresh Debian/Ubuntu machine:
# uv, the locked Python environment, the UI's chart library (npm), RabbitMQ server (for
# private broker nodes) and,
# for the tests, PostgreSQL (binaries: the tests run a private server), Chromium and
# Prometheus. Idempotent; quick when all is there.
#   scripts/bootstrap.sh         Python deps + RabbitMQ (what `make dev` needs)
#   scripts/bootstrap.sh --test  also PostgreSQL, Chromium, Prometheus (for `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

export UV_PYTHON_DOWNLOADS=never
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null; then
    echo "bootstrap: missing $*; install it with: sudo apt-get install -y $*" >&2
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

UV_HOME="$HOME/.local/share/tasklab/uv"
if ! command -v uv >/dev/null && [ -x "$UV_HOME/bin/uv" ]; then
  export PATH="$UV_HOME/bin:$PATH"
fi
if ! command -v uv >/dev/null; then
  say "installing uv"
  if ! python3 -m pip install --quiet uv 2>/dev/null \
    && ! python3 -m pip install --quiet --user uv 2>/dev/null; then
    # A system Python that refuses pip (PEP 668: Debian 12, Ubuntu 24.04) or has none:
    # uv in a virtual environment of its own.
    python3 -c "import ensurepip" 2>/dev/null || apt_install python3-venv
    python3 -m venv "$UV_HOME"
    "$UV_HOME/bin/pip" install --quiet uv
    echo "bootstrap: uv is in $UV_HOME/bin (add it to PATH to run uv yourself)"
  fi
  export PATH="$HOME/.local/bin:$UV_HOME/bin:$PATH"
fi

say "syncing the Python environment (uv.lock)"
uv sync --frozen --quiet

# The web UI's chart library: an npm package (services/api/ui/package-lock.json) built
# into the api's static files; rebuilt only when the lockfile changed.
if ! command -v npm >/dev/null; then
  say "installing nodejs and npm (to build the UI's chart library)"
  apt_install nodejs npm
fi
uv run --frozen --quiet python -m tasklab_devtools.uiassets

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  say "installing rabbitmq-server"
  apt_install rabbitmq-server
fi

if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (for the UI tests)"
  apt_install chromium
fi

if [ "$want_test" = 1 ] && [ ! -x /usr/bin/prometheus ]; then
  say "installing prometheus (for the observability tests)"
  apt_install prometheus
fi

# The test cluster (tasklab_devtools.cluster): runc is built with seccomp (cgo and
# libseccomp), kube-proxy programs iptables and conntrack inside the node's own network
# namespace, the storage helper pods run Debian's static busybox.
if [ "$want_test" = 1 ]; then
  cluster_pkgs=()
  [ -f /usr/include/seccomp.h ] || cluster_pkgs+=(libseccomp-dev)
  command -v pkg-config >/dev/null || cluster_pkgs+=(pkg-config)
  command -v iptables-restore >/dev/null || cluster_pkgs+=(iptables)
  command -v conntrack >/dev/null || cluster_pkgs+=(conntrack)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" \
    || cluster_pkgs+=(busybox-static)
  if [ "${#cluster_pkgs[@]}" -gt 0 ]; then
    say "installing ${cluster_pkgs[*]} (for the test cluster)"
    apt_install "${cluster_pkgs[@]}"
  fi
  if ! command -v go >/dev/null; then
    echo "bootstrap: the test cluster is built with Go 1.24+, which is not on PATH (https://go.dev/dl/)" >&2
    exit 1
  fi
fi

# The tests start a private PostgreSQL server of their own (tasklab_devtools.pg: initdb
# in a temporary folder, a generated password, a free port), so the machine's own
# cluster is neither started nor reconfigured: only the binaries are needed.
if [ "$want_test" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing postgresql (the tests run a private server)"
  apt_install postgresql
fi
