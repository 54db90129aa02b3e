# The two commands of the README: `make run` and `make test`. Both prepare the machine themselves.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PLAYBOOK_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test setup setup-dev lint sanity unit integration stop teardown benchmark clean docker molecule molecule-k3s molecule-platform

run: setup
	$(BIN)/ansible-playbook site.yml $(PLAYBOOK_ARGS)

# The integration tests drive ansible-playbook (CPU-bound): one worker per core, one file per worker
# (the tests of a file share an emulator and run in order).
test: setup-dev lint
	$(BIN)/pytest -n 2 --dist loadfile

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh --dev

lint: setup-dev sanity
	$(BIN)/yamllint --strict .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/ansible-lint

# ansible-test sanity on the collection's plugins, in a copy under .local/sanity (see the script).
sanity: setup-dev
	scripts/sanity.sh

# Docker for the Molecule scenarios: Debian's docker.io, the daemon, the local Debian 12 image (root).
docker:
	scripts/docker.sh

# The Molecule scenarios (molecule/README.md); `make test` runs them too (tests/integration/test_molecule_*.py).
molecule: molecule-k3s molecule-platform

# The k3s role in a local Debian 12 container (molecule/k3s).
molecule-k3s: setup-dev docker
	$(BIN)/molecule test -s k3s

# The platform roles, run on this machine as `make run` runs them (no Docker), on ports of their own.
molecule-platform: setup-dev
	$(BIN)/molecule test -s postgres
	$(BIN)/molecule test -s pgbouncer
	$(BIN)/molecule test -s rabbitmq
	$(BIN)/molecule test -s fluent_bit

unit: setup-dev
	$(BIN)/pytest tests/unit

integration: setup-dev
	$(BIN)/pytest tests/integration

# Removes everything the AWS layer created (typed confirmation is not asked for the local emulator).
teardown: setup
	$(BIN)/ansible-playbook playbooks/teardown.yml $(PLAYBOOK_ARGS)

# Stops every local service this checkout started.
stop: setup
	$(BIN)/ansible-playbook playbooks/workers.yml -e workers_local_state=stopped
	$(BIN)/ansible-playbook playbooks/lambdas.yml -e lambdas_local_state=stopped
	$(BIN)/ansible-playbook playbooks/platform.yml -e tenantforge_platform_local_state=stopped
	$(BIN)/ansible-playbook playbooks/local_services.yml -e tenantforge_local_services_state=stopped

# Each benchmark starts and stops a private stack of its own; the one of `make run` is not touched.
benchmark: setup-dev
	$(BIN)/python benchmarks/infrastructure.py
	$(BIN)/python benchmarks/secrets_sync.py
	$(BIN)/python benchmarks/pgbouncer.py
	$(BIN)/python benchmarks/rabbitmq.py
	$(BIN)/python benchmarks/tenants.py
	$(BIN)/python benchmarks/authorizer.py
	$(BIN)/python benchmarks/orchestrator.py

clean: stop
	rm -rf .local
