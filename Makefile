# tasklab: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
# Where scripts/bootstrap.sh may have put uv (pip --user, or a venv of its own).
export PATH := $(PATH):$(HOME)/.local/bin:$(HOME)/.local/share/tasklab/uv/bin
UV ?= uv
PYTEST_ARGS ?=
SRC_DIRS := libs/common/src services/api/src services/celery-worker/src services/consumer/src tools/devtools/src bench
# Test folders are type-checked one at a time: each has its own conftest.py.
TEST_DIRS := $(wildcard libs/common/tests services/*/tests tools/devtools/tests tests/*)

# Component fragments (images, chart and cluster targets) live in mk/.
-include mk/*.mk

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_-]+:.*##/ {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST) | sort

.PHONY: install
install: ## Install uv, the Python environment and RabbitMQ server (as needed)
	@scripts/bootstrap.sh

.PHONY: dev
dev: install ## Run api (http://localhost:8080), celery-worker and consumer locally (MONITORING=1: + Prometheus)
	$(UV) run tasklab-dev $(if $(filter 1,$(MONITORING)),--monitoring)

.PHONY: logs
logs: ## Follow the log of one service of a running make dev (SERVICE=celery-worker|api|consumer|celery-beat; all without)
	@$(UV) run python -m tasklab_devtools.devlogs $(SERVICE)

.PHONY: screenshots
screenshots: ## Make the README's screenshots again (docs/screenshots/; a stack and Chromium of their own)
	$(UV) run python -m tasklab_devtools.screenshots

.PHONY: ui-assets
ui-assets: ## Build the UI's chart library (npm ci from services/api/ui's lockfile) into the api's static files
	$(UV) run python -m tasklab_devtools.uiassets

.PHONY: lint
lint: ## ruff (lint and format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(SRC_DIRS)
	@for d in $(TEST_DIRS); do echo "mypy $$d"; $(UV) run mypy $$d || exit 1; done

.PHONY: unit
unit: ## Unit tests of every package (real SQLite, PostgreSQL, RabbitMQ)
	$(UV) run pytest libs services tools $(PYTEST_ARGS)

.PHONY: e2e
e2e: ## The e2e suite against a local stack it starts itself
	$(UV) run pytest tests/e2e $(PYTEST_ARGS)

.PHONY: test
test: ## Everything CI runs: install, lint, unit, e2e, UI, image and real-cluster tests
	@scripts/bootstrap.sh --test
	@# The test cluster's Go build (cached by version: instant when warm) starts now, at
	@# the lowest priority, so that a cold one overlaps the tiers before the cluster's.
	@mkdir -p artifacts && (nice -n 19 $(UV) run python -m tasklab_devtools.cluster build --all \
	  --log-dir artifacts/cluster-build > artifacts/cluster-build.log 2>&1 &)
	@# The lint and the image checks at once (their outputs kept apart).
	$(MAKE) --no-print-directory -j2 --output-sync=target lint verify-images
	@scripts/k8s-tools.sh
	@# The cluster tier (mostly waiting on Kubernetes) beside the tiers on local processes;
	@# its output is printed at the end (artifacts/cluster-test.log).
	$(UV) run python -m tasklab_devtools.tiers $(PYTEST_ARGS)
