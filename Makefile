# registry-gateway: `make demo` to try it, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO := $(CURDIR)/demo
# torch is pinned exactly: a looser spec pulls GBs of CUDA wheels.
EXTRAS ?= torch,dev
# e.g. SERVE_ARGS=--insecure to serve HOST=0.0.0.0 without API keys (a trusted network)
SERVE_ARGS ?=

.PHONY: install demo demo-registry serve test lint format clean bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

demo-registry: install
	$(BIN)/registry-gateway demo-registry --path $(DEMO) --base-url http://$(HOST):$(PORT)

demo: demo-registry
	@echo "Serving the demo registry on http://$(HOST):$(PORT) (Ctrl-C to stop)"
	MLFLOW_TRACKING_URI=sqlite:///$(DEMO)/mlflow.db \
	GATEWAY_ARTIFACT_CACHE_DIR=$(DEMO)/artifact-cache \
	GATEWAY_DATABASE_URL=sqlite:///$(DEMO)/gateway-state.db \
	$(BIN)/registry-gateway serve --host $(HOST) --port $(PORT) $(SERVE_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmark (bench/README.md): ~8 minutes; `make bench BENCH_ARGS=--quick` for a ~4-minute smoke run.
bench: install
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1) || \
		echo "wrk not installed: using bench/loadgen.py"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache *.egg-info
