#!/usr/bin/env bash
# make kind-up: tasklab on a local kind cluster, from scratch or again (idempotent).
#
#   1. checks for docker, kind, kubectl and helm;
#   2. creates the kind cluster (deploy/kind/cluster.yaml) unless it exists;
#   3. builds the images (make images) and loads them into the node (kind load);
#   4. installs kube-prometheus-stack (MONITORING=0 skips it) and, with KEDA=1, KEDA
#      from their upstream charts, at pinned versions;
#   5. installs or upgrades the tasklab chart and waits until it is ready;
#   6. leaves kubectl on the release's namespace and prints where everything is.
#
# Settings (environment): KIND_CLUSTER (tasklab), NAMESPACE (tasklab), RELEASE
# (tasklab), IMAGE_TAG (as make images: scripts/image-tag.sh),
# MONITORING (1), KEDA (0; 1: KEDA scales celery-worker on its queue, and owns its
# replica count), HELM_TIMEOUT (15m).
#   scripts/kind-up.sh --print-helm-args   print the tasklab chart's helm arguments
#                                          (what the offline tests render) and exit
set -euo pipefail
cd "$(dirname "$0")/.."

KIND_CLUSTER=${KIND_CLUSTER:-tasklab}
NAMESPACE=${NAMESPACE:-tasklab}
RELEASE=${RELEASE:-tasklab}
MONITORING=${MONITORING:-1}
KEDA=${KEDA:-0}
HELM_TIMEOUT=${HELM_TIMEOUT:-15m}
CHART=deploy/helm/tasklab
# Upstream charts, pinned.
KPS_REPO=https://prometheus-community.github.io/helm-charts
KPS_VERSION=85.1.3
KEDA_REPO=https://kedacore.github.io/charts
KEDA_VERSION=2.18.3

if [ -z "${IMAGE_TAG:-}" ]; then
  IMAGE_TAG=$(scripts/image-tag.sh)
fi

for flag in MONITORING KEDA; do
  case "${!flag}" in
    0 | 1) ;;
    *) echo "kind-up: $flag must be 0 or 1, not '${!flag}'" >&2; exit 2 ;;
  esac
done

# The tasklab chart's values: the kind set, the image tag, and the switches.
helm_args() {
  local args=(-f "$CHART/ci/kind-values.yaml" --set-string "image.tag=$IMAGE_TAG")
  if [ "$KEDA" = 1 ]; then
    args+=(--set celeryWorker.autoscaling.mode=keda)
  fi
  if [ "$MONITORING" = 0 ]; then
    args+=(--set monitoring.enabled=false --set rabbitmq.metrics.serviceMonitor.enabled=false)
  fi
  printf '%s\n' "${args[@]}"
}

if [ "${1:-}" = "--print-helm-args" ]; then
  helm_args
  exit 0
elif [ -n "${1:-}" ]; then
  echo "kind-up: unknown argument $1" >&2
  exit 2
fi

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# ------------------------------------------------------------------ 1. tools
missing=0
require() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "kind-up: '$1' not found. $2" >&2
    missing=1
  fi
}
require docker "Install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/"
require kind "Install kind v0.30 or later: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
require kubectl "Install kubectl 1.33-1.35: https://kubernetes.io/docs/tasks/tools/#kubectl"
require helm "Install helm 3.14+ or 4: https://helm.sh/docs/intro/install/"
require "${UV:-uv}" "make images builds with uv (and Python 3.11+, which uv can fetch): https://docs.astral.sh/uv/getting-started/installation/"
if [ "$missing" = 1 ]; then exit 1; fi
if ! docker info >/dev/null 2>&1; then
  echo "kind-up: docker is installed but its daemon does not answer (is it running, may you use it?)" >&2
  exit 1
fi

# ------------------------------------------------------------------ 2. cluster
CONTEXT="kind-$KIND_CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  say "kind cluster '$KIND_CLUSTER' exists"
else
  say "creating kind cluster '$KIND_CLUSTER'"
  kind create cluster --name "$KIND_CLUSTER" --config deploy/kind/cluster.yaml --wait 180s
fi
kubectl config use-context "$CONTEXT" >/dev/null
KUBECTL=(kubectl --context "$CONTEXT")
HELM=(helm --kube-context "$CONTEXT")

ensure_namespace() {
  "${KUBECTL[@]}" create namespace "$1" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
}

# ------------------------------------------------------------------ 3. images
say "building the images (tag $IMAGE_TAG)"
make --no-print-directory images IMAGE_TAG="$IMAGE_TAG"
say "loading the images into the kind node"
kind load docker-image --name "$KIND_CLUSTER" \
  "tasklab/api:$IMAGE_TAG" "tasklab/celery-worker:$IMAGE_TAG" "tasklab/consumer:$IMAGE_TAG"

# ------------------------------------------------------------------ 4. monitoring, KEDA
if [ "$MONITORING" = 1 ]; then
  say "installing kube-prometheus-stack $KPS_VERSION (namespace monitoring)"
  helm repo add prometheus-community "$KPS_REPO" --force-update >/dev/null
  ensure_namespace monitoring
  if ! "${KUBECTL[@]}" -n monitoring get secret grafana-admin >/dev/null 2>&1; then
    "${KUBECTL[@]}" -n monitoring create secret generic grafana-admin \
      --from-literal=admin-user=admin \
      --from-literal=admin-password="$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)" >/dev/null
  fi
  "${HELM[@]}" upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --version "$KPS_VERSION" --namespace monitoring \
    -f deploy/kind/kube-prometheus-stack-values.yaml --wait --timeout "$HELM_TIMEOUT"
else
  say "MONITORING=0: no kube-prometheus-stack"
fi

if [ "$KEDA" = 1 ]; then
  say "installing KEDA $KEDA_VERSION (namespace keda)"
  helm repo add kedacore "$KEDA_REPO" --force-update >/dev/null
  "${HELM[@]}" upgrade --install keda kedacore/keda --version "$KEDA_VERSION" \
    --namespace keda --create-namespace --wait --timeout "$HELM_TIMEOUT"
else
  say "no KEDA (KEDA=1 adds it): celery-worker keeps the replica count kubectl scale sets"
fi

# ------------------------------------------------------------------ 5. tasklab
say "installing tasklab (release $RELEASE, namespace $NAMESPACE)"
ensure_namespace "$NAMESPACE"
# Every pod of the namespace must meet the "restricted" Pod Security Standard.
"${KUBECTL[@]}" label namespace "$NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted >/dev/null
values=()
while IFS= read -r arg; do values+=("$arg"); done < <(helm_args)  # (no mapfile: bash 3.2)
# Helm 4 applies server-side: after an autoscaler (KEDA=1, mode hpa) owned the worker's
# replica count, switching it off would conflict with the HPA controller's field.
if helm version --short 2>/dev/null | grep -q '^v4'; then
  values+=(--force-conflicts)
fi
"${HELM[@]}" upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
  "${values[@]}" --wait --timeout "$HELM_TIMEOUT"

# ------------------------------------------------------------------ 6. where things are
kubectl config set-context --current --namespace "$NAMESPACE" >/dev/null
"${KUBECTL[@]}" -n "$NAMESPACE" get pods

cat <<EOF

tasklab is up on kind cluster '$KIND_CLUSTER'; kubectl now uses namespace '$NAMESPACE'.

  Web UI and API       http://localhost:30080          (OpenAPI: http://localhost:30080/docs)
  RabbitMQ management  make port-forward, then http://localhost:15672 (not published:
                       its NetworkPolicy admits only the api and KEDA)
      user:      kubectl get secret rabbitmq -o jsonpath='{.data.username}' | base64 -d
      password:  kubectl get secret rabbitmq -o jsonpath='{.data.password}' | base64 -d
EOF
if [ "$MONITORING" = 1 ]; then
  cat <<EOF
  Grafana              http://localhost:30300          (dashboards: folder tasklab)
      user admin, password:
                 kubectl -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d
  Prometheus           http://localhost:30090
EOF
fi
cat <<EOF

  Scale the workers:   kubectl scale deployment celery-worker --replicas=3$([ "$KEDA" = 1 ] && printf '%s' "
                       (KEDA owns the count here; pin it with
                        kubectl annotate scaledobject celery-worker autoscaling.keda.sh/paused-replicas=3 --overwrite)")
  Check end to end:    helm test $RELEASE        make e2e-kind
  Port-forwards:       make port-forward          Tear down: make kind-down
EOF
