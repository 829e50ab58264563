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
KUBERNETES_CORE := $(BIN)/python -c 'import ansible_collections.kubernetes.core as m; print(list(m.__path__)[0])'
N ?= 2
API_TARGETS ?= cacerts_info_api remote_secret_api restart_workloads_api
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections
export ANSIBLE_NOCOLOR := 1

.PHONY: help tools venv collection dist ee sanity lint unit ruff docs commits check integration testbin testbin-upgrade clusters clusters-down clusters-status \
        smoke integration-api e2e molecule molecule-syntax demo demo-first-run demo-down test bench bench-site bench-scale bench-rotate bench-upgrade clean

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
	@git ls-files -co --exclude-standard -z | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C $(COLLECTION)
	@rm -rf $(TREE)/kubernetes/core
	@cp -r $$($(KUBERNETES_CORE)) $(TREE)/kubernetes/core

DIST := $(BUILD)/dist
DIST_COLLECTIONS := $(DIST)/collections
INSTALLED := $(DIST_COLLECTIONS)/ansible_collections/meshfed/istio
# Only what was installed into DIST_COLLECTIONS: not the build tree, not the ansible package's collections.
FROM_DIST := ANSIBLE_COLLECTIONS_PATH=$(DIST_COLLECTIONS) ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
TARBALL = $(DIST)/meshfed-istio-$(shell sed -n 's/^version: *//p' galaxy.yml).tar.gz

dist: venv ## Galaxy tarball, installed into an empty collections path with its declared dependencies (no Galaxy server needed)
	@rm -rf $(DIST) && mkdir -p $(DIST)
	$(BIN)/ansible-galaxy collection build --output-path $(DIST) .
	@# The dependencies the tarball declares, and only those, from the pinned ansible package (directory installs);
	@# --offline: no server is asked, and each declared bound must accept the copy given.
	deps="$$($(BIN)/python tests/dist/dependencies.py $(TARBALL))" && \
	  $(FROM_DIST) $(BIN)/ansible-galaxy collection install --offline -p $(DIST_COLLECTIONS) $(TARBALL) $$deps
	$(FROM_DIST) $(BIN)/ansible-playbook --syntax-check -i localhost, $(patsubst playbooks/%.yml,meshfed.istio.%,$(wildcard playbooks/*.yml))

ANSIBLE_BUILDER := 3.2.0
BUILDER_VENV := $(MESHFED_CACHE)/venv-builder-$(ANSIBLE_BUILDER)

$(BUILDER_VENV)/bin/ansible-builder:
	$(PYTHON) -m venv $(BUILDER_VENV)
	$(BUILDER_VENV)/bin/pip install --quiet ansible-builder==$(ANSIBLE_BUILDER) -c constraints.txt

ee: dist $(BUILDER_VENV)/bin/ansible-builder ## Execution environment: ansible-builder create + introspect of the installed tarball
	tests/ee/check.sh $(BUILDER_VENV)/bin $(DIST)

ANSIBLE_CORE := $(shell sed -n 's/^ansible-core==//p' requirements-dev.txt)
SANITY_VENV := $(MESHFED_CACHE)/venv-sanity-$(ANSIBLE_CORE)

$(SANITY_VENV)/bin/ansible-test:
	$(PYTHON) -m venv $(SANITY_VENV)
	$(SANITY_VENV)/bin/pip install --quiet ansible-core==$(ANSIBLE_CORE)

sanity: collection $(SANITY_VENV)/bin/ansible-test ## ansible-test sanity (its own pinned tools, in virtualenvs)
	@pipv=$$($(SANITY_VENV)/bin/python -c 'from ansible_test._internal.python_requirements import PIP_BOOTSTRAP_VERSION as v; print(v)' 2>/dev/null \
	  || sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" $(SANITY_VENV)/lib/python*/site-packages/ansible_test/_internal/python_requirements.py); \
	  mkdir -p ~/.ansible/test/cache && cp tests/sanity/pip_bootstrap.py ~/.ansible/test/cache/get_pip_$${pipv//./_}.py
	cd $(COLLECTION) && $(SANITY_VENV)/bin/ansible-test sanity --local --requirements --python 3.11 --color no

lint: collection ## ansible-lint, production profile
	$(BIN)/ansible-lint --profile production --offline

unit: venv ## pytest: pure functions, module decisions, the mutual-TLS story
	$(BIN)/python -m pytest -q tests/unit

ruff: venv ## ruff: lint and format check of every Python file
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: collection ## Every plugin renders with ansible-doc; the changelog fragments are valid
	@cd $(COLLECTION) && for type in module filter lookup; do \
	  plugins=$$($(CURDIR)/$(BIN)/ansible-doc -t $$type -l meshfed.istio 2>/dev/null | awk '{print $$1}'); \
	  [ -n "$$plugins" ] || { echo "no $$type plugins listed"; exit 1; }; \
	  $(CURDIR)/$(BIN)/ansible-doc -t $$type $$plugins > /dev/null || exit 1; \
	  echo "ansible-doc: $$(echo $$plugins | wc -w) $$type plugins render"; done
	$(BIN)/antsibull-changelog lint

commits: ## Every commit since the habit's base: a subject of at most 72 characters and a body (skips without that history)
	.ci/commits.sh

check: ruff docs unit commits ## The fast loop (under a minute on an idle 2-core machine): ruff, ansible-doc of every plugin, unit tests, commit habits

integration: collection ## ansible-test integration targets that need no cluster
	cd $(COLLECTION) && PATH=$(CURDIR)/$(BIN):$$PATH $(CURDIR)/$(BIN)/ansible-test integration --local --color no pki_module cacerts_info mesh_plan

testbin: ## Build or find the pinned test binaries (cached outside the repo)
	tests/testbed/testbin.sh

testbin-upgrade: ## The same, and the older Istio release the upgrade test starts from
	tests/testbed/testbin.sh upgrade

clusters: testbin ## Bring up N kwok clusters (N=2 by default)
	tests/testbed/clusters.sh up $(N)

clusters-down: ## Tear the kwok clusters down
	tests/testbed/clusters.sh down

clusters-status: ## Health of the kwok clusters
	tests/testbed/clusters.sh status

smoke: testbin ## Test-bed smoke test: clusters, istioctl install, LoadBalancer addresses, teardown
	tests/testbed/smoke.sh

API_RUN := $(MESHFED_CACHE)/api-run
API_BED := MESHFED_RUN=$(API_RUN) MESHFED_NETNS=meshfed-api $(CURDIR)/tests/testbed/clusters.sh

integration-api: collection testbin ## ansible-test targets against a real kube-apiserver (kwok test bed)
	$(API_BED) down >/dev/null 2>&1 || true
	$(API_BED) up 1
	printf 'meshfed_test_kubeconfig: %s\nmeshfed_test_context: cluster1\n' $(API_RUN)/kubeconfig \
	  > $(COLLECTION)/tests/integration/integration_config.yml
	cd $(COLLECTION) && $(API_BED) exec -- env PATH=$(CURDIR)/$(BIN):$$PATH \
	  $(CURDIR)/$(BIN)/ansible-test integration --local --color no --allow-unsupported $(API_TARGETS); \
	  status=$$?; $(API_BED) down >/dev/null 2>&1; exit $$status

TOOLS ?= graphviz librsvg2-bin

tools: ## System tools the tests use: Graphviz (the doctor's picture), rsvg-convert (renders it in a test)
	@missing=""; for t in $(TOOLS); do case $$t in graphviz) c=dot;; librsvg2-bin) c=rsvg-convert;; *) c=$$t;; esac; \
	  command -v $$c >/dev/null || missing="$$missing $$t"; done; \
	  if [ -n "$$missing" ]; then \
	    command -v apt-get >/dev/null || { echo "make tools: install$$missing with your package manager" >&2; exit 1; }; \
	    echo "installing$$missing (apt-get)"; \
	    { apt-get install -y -q $$missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; } \
	      || { echo "make tools: apt-get install$$missing failed (root and Debian's package mirror needed)" >&2; exit 1; }; \
	  fi

e2e: collection testbin-upgrade tools ## The site playbook on three kwok topologies, preflight refusals, the doctor, the real istiod, membership (pytest)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

MOLECULE_RUN := $(MESHFED_CACHE)/molecule-run
MOLECULE_BED := MESHFED_RUN=$(MOLECULE_RUN) MESHFED_NETNS=meshfed-molecule $(CURDIR)/tests/testbed/clusters.sh

molecule: dist testbin ## molecule kwok scenario (converge, idempotence, verify) from the installed tarball, in the test bed
	$(MOLECULE_BED) down >/dev/null 2>&1 || true
	$(MOLECULE_BED) up 2
	cd $(INSTALLED) && $(MOLECULE_BED) exec -- env PATH=$(CURDIR)/$(BIN):$$PATH MESHFED_REPO=$(CURDIR) $(FROM_DIST) MESHFED_DIST_COLLECTIONS=$(DIST_COLLECTIONS) \
	  MOLECULE_GLOB='extensions/molecule/*/molecule.yml' MESHFED_ISTIOCTL=$$($(CURDIR)/tests/testbed/testbin.sh path istioctl) \
	  $(CURDIR)/$(BIN)/molecule test -s kwok; \
	  status=$$?; $(MOLECULE_BED) down >/dev/null 2>&1; exit $$status

molecule-syntax: collection ## Syntax check of both scenarios' playbooks (kind needs Docker to run, kwok the test bed)
	MOLECULE_EPHEMERAL_DIRECTORY=/tmp $(BIN)/ansible-playbook --syntax-check -i localhost, \
	  extensions/molecule/kind/create.yml extensions/molecule/kind/destroy.yml extensions/molecule/shared/converge.yml \
	  extensions/molecule/shared/verify.yml extensions/molecule/kwok/create.yml extensions/molecule/kwok/destroy.yml

demo: demo-first-run collection testbin ## Local kwok clusters, the site playbook, the verify result (N=2)
	-@$(MAKE) --no-print-directory tools TOOLS=graphviz
	tests/testbed/demo.sh $(N)

demo-first-run:
	@tests/testbed/testbin.sh plan

demo-down: ## Remove the demo clusters
	MESHFED_RUN=$${MESHFED_RUN:-$(MESHFED_CACHE)/demo-run} MESHFED_NETNS=$${MESHFED_NETNS:-meshfed-demo} tests/testbed/clusters.sh down

test: ## What CI runs: the fast loop (make check), lint, sanity, integration, then the real-cluster tests
	$(MAKE) check
	$(MAKE) lint
	$(MAKE) sanity
	$(MAKE) integration
	$(MAKE) molecule-syntax
	$(MAKE) ee
	$(MAKE) smoke
	$(MAKE) integration-api
	$(MAKE) e2e
	$(MAKE) molecule

bench: collection ## PKI benchmark against the openssl CLI
	$(BIN)/python tests/bench/pki_bench.py

bench-site: collection testbin ## Site converge/rerun/verify on 2, 3, 4 kwok clusters against kubectl+istioctl by hand
	$(BIN)/python tests/bench/site_bench.py

bench-scale: collection testbin ## Site converge/rerun on 2, 4, 6 kwok clusters, a sixth joining five; wall time and the tool's CPU
	$(BIN)/python tests/bench/scale_bench.py $(BENCH_ARGS)

bench-rotate: collection testbin ## Root rotation of 3 clusters with the real istiod, its rerun, and site's rerun
	$(BIN)/python tests/bench/rotate_bench.py $(BENCH_ARGS)

bench-upgrade: collection testbin-upgrade ## Upgrade of 3 kwok clusters from Istio 1.30-dev to 1.31-dev: wall time per stage, total, rerun
	$(BIN)/python tests/bench/upgrade_bench.py $(BENCH_ARGS)

clean: ## Remove build output (not the binary cache)
	rm -rf $(BUILD) tests/output
