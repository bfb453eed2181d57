# Kubernetes: the Helm chart's offline checks and the local kind cluster
# (included by the root Makefile). Details: the Kubernetes section of README.md.
#   make chart-check                   lint, render, validate the chart (no cluster needed)
#   make kind-up [KEDA=1] [MONITORING=0]
#   make kind-down | port-forward | e2e-kind

KIND_CLUSTER ?= tasklab
K8S_NAMESPACE ?= tasklab

.PHONY: k8s-tools
k8s-tools: ## Install helm, kubectl, the CRD validators and checkov into .tools/
	@scripts/k8s-tools.sh

.PHONY: chart-check
chart-check: k8s-tools ## Offline checks of the Helm chart: lint, schemas, security, contract, broker, checkov
	$(UV) run pytest tests/chart $(PYTEST_ARGS)

.PHONY: kind-up
kind-up: ## Local kind cluster with tasklab and monitoring (KEDA=1: autoscaled workers; MONITORING=0)
	KIND_CLUSTER='$(KIND_CLUSTER)' NAMESPACE='$(K8S_NAMESPACE)' IMAGE_TAG='$(IMAGE_TAG)' \
	  KEDA='$(KEDA)' MONITORING='$(MONITORING)' scripts/kind-up.sh

.PHONY: kind-down
kind-down: ## Delete the local kind cluster (and everything in it)
	@command -v kind >/dev/null || { echo "kind-down: kind not found"; exit 1; }
	kind delete cluster --name '$(KIND_CLUSTER)'

.PHONY: port-forward
port-forward: ## Forward the UI, RabbitMQ management, Grafana and Prometheus to localhost
	@NAMESPACE='$(K8S_NAMESPACE)' scripts/port-forward.sh

.PHONY: e2e-kind
e2e-kind: ## The e2e suite against the release on the current kind cluster
	TASKLAB_E2E_TARGET=kind TASKLAB_E2E_NAMESPACE='$(K8S_NAMESPACE)' $(UV) run pytest tests/e2e $(PYTEST_ARGS)
