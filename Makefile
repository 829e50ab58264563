# One entry point. `make test` is what CI runs (.ci/run); `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MESHFED_CACHE ?= $(HOME)/.cache/meshfed
BUILD ?= $(MESHFED_CACHE)/build
TREE := $(BUILD)/collections/ansible_collections
COLLECTION := $(TREE)/meshfed/istio
N ?= 2
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections
export ANSIBLE_NOCOLOR := 1

.PHONY: help venv collection sanity lint unit integration testbin clusters clusters-down clusters-status \
        smoke integration-api test bench clean

help: ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(BIN)/.installed ## Python virtualenv with the pinned stack

collection: venv ## Copy the collection (and kubernetes.core from the ansible package) into build/collections
	@rm -rf $(COLLECTION) && mkdir -p $(COLLECTION) $(TREE)/kubernetes
	@git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents -P {} $(COLLECTION)/ 2>/dev/null || true
	@rm -rf $(TREE)/kubernetes/core
	@cp -r $$($(BIN)/python -c 'import ansible_collections.kubernetes.core as m; print(list(m.__path__)[0])') $(TREE)/kubernetes/core

sanity: collection ## ansible-test sanity (its own pinned tools, in virtualenvs)
	cd $(COLLECTION) && $(CURDIR)/$(BIN)/ansible-test sanity --venv --python 3.11 --color no

lint: collection ## ansible-lint, production profile
	$(BIN)/ansible-lint --profile production --offline

unit: venv ## pytest: pure functions, module decisions, the mutual-TLS story
	$(BIN)/python -m pytest -q tests/unit

integration: collection ## ansible-test integration targets that need no cluster
	cd $(COLLECTION) && PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/ansible-test integration --local --color no cacerts cacerts_info

testbin: ## Build or find the pinned test binaries (cached outside the repo)
	tests/testbed/testbin.sh

clusters: testbin ## Bring up N kwok clusters (N=2 by default)
	tests/testbed/clusters.sh up $(N)

clusters-down: ## Tear the kwok clusters down
	tests/testbed/clusters.sh down

clusters-status: ## Health of the kwok clusters
	tests/testbed/clusters.sh status

smoke: testbin ## Test-bed smoke test: clusters, istioctl install, LoadBalancer addresses, teardown
	tests/testbed/smoke.sh

test: ## What CI runs: unit, sanity, lint, integration, real-cluster tests
	$(MAKE) unit
	$(MAKE) lint
	$(MAKE) integration
	$(MAKE) sanity

bench: venv ## PKI benchmark against the openssl CLI
	$(BIN)/python tests/bench/pki_bench.py

clean: ## Remove build output (not the binary cache)
	rm -rf $(BUILD) tests/output
