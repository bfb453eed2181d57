# The test cluster: one real Kubernetes node built from upstream source (included by the
# root Makefile). Details: "A real cluster here" in README.md.
#   make cluster-up          build (cached), start the node, import the images
#   make cluster-up KEDA=1 HPA=1 MONITORING=1   ... with KEDA, metrics-server, Prometheus
#   make cluster-install     tasklab's chart with make kind-up's helm arguments
#   make cluster-test        the cluster tier of make test (brings its own cluster up and down)
#   make cluster-down        stop it (keeps the logs in .dev/cluster/logs)
#   export KUBECONFIG=.dev/cluster/kubeconfig

CLUSTER := $(UV) run python -m tasklab_devtools.cluster
CLUSTER_UP_FLAGS = $(if $(filter 1,$(KEDA)),--keda) $(if $(filter 1,$(HPA)),--metrics-server) $(if $(filter 1,$(MONITORING)),--monitoring)
CLUSTER_INSTALL_FLAGS = $(if $(filter 1,$(KEDA)),--keda) $(if $(filter 1,$(MONITORING)),--monitoring)

.PHONY: cluster-build
cluster-build: install ## Build the test cluster's Kubernetes, containerd, CoreDNS... from source (cached)
	$(CLUSTER) build

.PHONY: cluster-up
cluster-up: install k8s-tools ## Start a one-node Kubernetes built from source (KEDA=1 HPA=1 MONITORING=1)
	$(CLUSTER) up $(CLUSTER_UP_FLAGS)

.PHONY: cluster-install
cluster-install: ## Install tasklab on the test cluster as make kind-up does (KEDA=1, MONITORING=1)
	$(CLUSTER) install $(CLUSTER_INSTALL_FLAGS)

.PHONY: cluster-down
cluster-down: ## Stop the test cluster (everything in it)
	$(CLUSTER) down

.PHONY: cluster-test
cluster-test: install k8s-tools ## The cluster tier: up, the chart, what users run, the e2e suite, down
	$(UV) run pytest tests/cluster $(PYTEST_ARGS)
