# DaprDockr developer entry points.  Every target installs what it needs first (scripts/setup.sh).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STATE ?= /tmp/daprdockr-ci
export DAPRDOCKR_STATE := $(STATE)

.PHONY: setup services test test-unit lint run cluster cluster-down bench clean wheelhouse image

setup:
	@bash scripts/setup.sh

# Starts dockerd when no engine answers and builds the local busybox test image.
services: setup
	@bash scripts/dockerd.sh >$(STATE).dockerd-state 2>&1 || { cat $(STATE).dockerd-state; exit 1; }
	@bash scripts/build-test-image.sh

# The test command of the README and of .ci/run: lint + type checks + every test against real
# etcd (started by the test session), real dockerd, real nginx and real DNS clients.
test: services lint
	@bash scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q tests/core

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The main job: a local etcd, one agent, and a demo service.
run: services
	@bash scripts/run-demo.sh

cluster: services
	@bash scripts/cluster.sh up

cluster-down:
	@bash scripts/cluster.sh down

clean: cluster-down
	rm -rf $(VENV) .pytest_cache .mypy_cache

# Benchmarks: each prints its figures beside a same-run baseline (see BENCHMARKS.md).
bench: services
	$(PY) bench/dns_bench.py
	$(PY) bench/convergence_bench.py
	$(PY) bench/failover_bench.py
	$(PY) bench/etcd_ops_bench.py
	$(PY) bench/etcd_outage_bench.py
	$(PY) bench/http_membership_bench.py
	$(PY) bench/rolling_update_bench.py

# Container images for the docker-compose dev cluster.  The wheels are fetched on the host (its pip
# settings, proxies and CAs) for the Python of BASE (scripts/wheelhouse.sh asks the image), so the
# image build itself needs only the Debian mirror.
# BASE: a Debian-based image with python3 + python3-venv (default python:3.11-slim-bookworm).
BASE ?= python:3.11-slim-bookworm
wheelhouse: setup
	@bash scripts/wheelhouse.sh $(BASE)

image: wheelhouse
	docker build --network host --build-arg BASE=$(BASE) -t daprdockr/agent:dev .
	docker build --network host --build-arg BASE=$(BASE) --target etcd -t daprdockr/etcd:dev .
