#!/usr/bin/env bash
# make port-forward: the UI, RabbitMQ management and (when installed) Grafana and
# Prometheus of a tasklab release, on localhost, until Ctrl-C. Works on any cluster
# (kubectl's current context); on the kind cluster the NodePorts are mapped already.
# Settings: NAMESPACE (kubectl's current namespace, else tasklab), API_PORT (8080),
# RABBITMQ_PORT (15672), GRAFANA_PORT (3000), PROMETHEUS_PORT (9090).
set -euo pipefail
command -v kubectl >/dev/null || { echo "port-forward: kubectl not found" >&2; exit 1; }
current_ns=$(kubectl config view --minify -o jsonpath='{..namespace}' 2>/dev/null || true)
NAMESPACE=${NAMESPACE:-${current_ns:-tasklab}}
API_PORT=${API_PORT:-8080}
RABBITMQ_PORT=${RABBITMQ_PORT:-15672}
GRAFANA_PORT=${GRAFANA_PORT:-3000}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    mapfile -t kids < <(pgrep -P "$pid" || true)  # its kubectl, stopped after the loop
    kill "$pid" 2>/dev/null || true
    [ "${#kids[@]}" = 0 ] || kill "${kids[@]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# kubectl port-forward ends for good on the first error a forwarded connection meets
# (a connection reset by the pod, the pod replaced by a rollout): each runs in a loop
# that starts it again.
forward() {  # namespace service local-port remote-port label
  if kubectl -n "$1" get service "$2" >/dev/null 2>&1; then
    (
      while true; do
        kubectl -n "$1" port-forward "service/$2" "$3:$4" >/dev/null || true
        echo "port-forward: $5 ended; starting it again" >&2
        sleep 1
      done
    ) &
    pids+=($!)
    printf '  %-22s http://localhost:%s\n' "$5" "$3"
  fi
}

echo "Forwarding (Ctrl-C to stop), namespace $NAMESPACE:"
forward "$NAMESPACE" api "$API_PORT" 8080 "Web UI and API"
forward "$NAMESPACE" rabbitmq "$RABBITMQ_PORT" 15672 "RabbitMQ management"
forward monitoring kube-prometheus-stack-grafana "$GRAFANA_PORT" 80 "Grafana"
forward monitoring kube-prometheus-stack-prometheus "$PROMETHEUS_PORT" 9090 "Prometheus"
if [ "${#pids[@]}" = 0 ]; then
  echo "port-forward: no tasklab Service in namespace $NAMESPACE (set NAMESPACE=...)" >&2
  exit 1
fi
wait
