# The test cluster: one real Kubernetes node built from upstream source (included by the
# root Makefile). Details: "A real cluster here" in README.md.
#   make cluster-up          build (cached), start the node, import the images
#   make cluster-install     tasklab's chart with make kind-up's helm arguments
#   make cluster-test        the cluster tier of make test (brings its own cluster up and down)
#   make cluster-down        stop it (keeps the logs in .dev/cluster/logs)
#   export KUBECONFIG=.dev/cluster/kubeconfig

CLUSTER := $(UV) run python -m tasklab_devtools.cluster

.PHONY: cluster-build
cluster-build: install ## Build the test cluster's Kubernetes, containerd, CoreDNS... from source (cached)
	$(CLUSTER) build

.PHONY: cluster-up
cluster-up: install k8s-tools ## Start a one-node Kubernetes built from source (KUBECONFIG=.dev/cluster/kubeconfig)
	$(CLUSTER) up

.PHONY: cluster-install
cluster-install: ## Install tasklab on the test cluster as make kind-up does
	$(CLUSTER) install

.PHONY: cluster-down
cluster-down: ## Stop the test cluster (everything in it)
	$(CLUSTER) down

.PHONY: cluster-test
cluster-test: install k8s-tools ## The cluster tier: up, the chart, what users run, the e2e suite, down
	$(UV) run pytest tests/cluster $(PYTEST_ARGS)
