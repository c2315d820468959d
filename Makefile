# registry-gateway: `make demo` to try it, `make test` to check it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO := $(CURDIR)/demo
# torch is pinned exactly: a looser spec pulls GBs of CUDA wheels. flavors: the libraries of
# the flavor matrix the tests serve (XGBoost, LightGBM, CatBoost, statsmodels, Prophet, ONNX,
# Keras, transformers...).
EXTRAS ?= torch,dev,flavors
# e.g. SERVE_ARGS=--insecure to serve HOST=0.0.0.0 without API keys (a trusted network)
SERVE_ARGS ?=
# the demo's bearer token for POST /admin/sync (the README's tour uses it): change it to serve
# the demo beyond this machine
ADMIN_TOKEN ?= demo-admin

.PHONY: install demo demo-registry fleet serve test lint format clean bench protos docs kserve-env mlserver-env mlflow2-env interop-envs

# uv installs (a dependency of the gateway, which builds models' environments with it): it
# resolves and installs these ~190 packages in well under a minute where pip took 4 to 7.
# It reads pip's find-links (PIP_FIND_LINKS) too, where a machine keeps wheels on disk (the CPU
# build of torch on these machines: the pin alone would download a CUDA build of several GB).
UV = $(BIN)/uv
UV_INSTALL = UV_FIND_LINKS="$${UV_FIND_LINKS:-$${PIP_FIND_LINKS:-}}" $(UV) pip install --quiet --python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'uv>=0.9'
	$(UV_INSTALL) $(BIN)/python -e '.[$(EXTRAS)]'
	touch $@

# Bytecode for every module in a venv, compiled once (a stamp per venv). Where
# PYTHONDONTWRITEBYTECODE is set, as on this project's machines, Python never caches the .pyc of
# what it imports, so every process compiled MLflow, pandas, torch... from source again: a
# `registry-gateway serve` start took 25 s of CPU where it takes 12 s from bytecode, and this
# was about half of the test suite's CPU time. (A file that does not compile, such as torch's
# Python 3.12 samples, is left to Python as before.) It says what it does and how far it is.
%/.bytecode: %/.installed
	$*/bin/python envs/bytecode.py
	touch $@

install: $(VENV)/.installed $(VENV)/.bytecode

# Other projects' Open Inference Protocol tooling, each in an environment of its own because
# its pins clash with the gateway's (envs/*.txt say which): the kserve SDK's clients and MLServer
# with mlserver-mlflow. tests/gateway/protocols speak to the gateway through them (the kserve
# client, the MLServer differential) and bench/ measures MLServer. Built once, rebuilt when
# their pins change (for MLServer also the project's: it gets the same mlflow, scikit-learn,
# pandas and numpy, and torch, so both servers load a version with the same libraries).
KSERVE_VENV := .venv-kserve
MLSERVER_VENV := .venv-mlserver
PROJECT_PINS = $$($(BIN)/python envs/project_pins.py)

$(KSERVE_VENV)/.installed: envs/kserve.txt $(VENV)/.installed
	rm -rf $(KSERVE_VENV)
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(UV_INSTALL) $(KSERVE_VENV)/bin/python -r envs/kserve.txt
	touch $@

$(MLSERVER_VENV)/.installed: envs/mlserver.txt envs/project_pins.py $(VENV)/.installed
	rm -rf $(MLSERVER_VENV)
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(UV_INSTALL) $(MLSERVER_VENV)/bin/python -r envs/mlserver.txt $(PROJECT_PINS)
	touch $@

# MLflow 2.22 (server and client), for the registries of the past (tests/test_mlflow2.py).
MLFLOW2_VENV := .venv-mlflow2
$(MLFLOW2_VENV)/.installed: envs/mlflow2.txt
	rm -rf $(MLFLOW2_VENV)
	$(PYTHON) -m venv $(MLFLOW2_VENV)
	$(UV_INSTALL) $(MLFLOW2_VENV)/bin/python -r envs/mlflow2.txt
	touch $@

kserve-env: $(KSERVE_VENV)/.installed $(KSERVE_VENV)/.bytecode
mlserver-env: $(MLSERVER_VENV)/.installed $(MLSERVER_VENV)/.bytecode
mlflow2-env: $(MLFLOW2_VENV)/.installed $(MLFLOW2_VENV)/.bytecode
interop-envs: kserve-env mlserver-env mlflow2-env

demo-registry: install
	$(BIN)/registry-gateway demo-registry --path $(DEMO) --base-url http://$(HOST):$(PORT)

demo: demo-registry
	@echo "Serving the demo registry on http://$(HOST):$(PORT) (Ctrl-C to stop)"
	@echo "The CLI against this demo, from another shell in this directory (the same state database):"
	@echo "  $(BIN)/registry-gateway status --url http://$(HOST):$(PORT)"
	@echo "  $(BIN)/registry-gateway keys list"
	MLFLOW_TRACKING_URI=sqlite:///$(DEMO)/mlflow.db \
	GATEWAY_ARTIFACT_CACHE_DIR=$(DEMO)/artifact-cache \
	GATEWAY_DEFAULT_MODEL=iris \
	GATEWAY_ADMIN_TOKEN=$(ADMIN_TOKEN) \
	$(BIN)/registry-gateway serve --host $(HOST) --port $(PORT) $(SERVE_ARGS)

# A fleet on loopback (docs/operations.md, "Running at scale"): a sync, two gateways and HAProxy
# from deploy/haproxy/haproxy.cfg; needs MLFLOW_TRACKING_URI, GATEWAY_DATABASE_URL (PostgreSQL)
# and haproxy. FLEET_ARGS: its options (deploy/local_fleet.py --help).
FLEET_ARGS ?=
fleet: install
	$(BIN)/python deploy/local_fleet.py $(FLEET_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Twice as many workers (pytest-xdist) as cores, at most 8, each taking whole test files, so a
# module's shared servers and registries stay in one process; TEST_WORKERS=0 runs serially (one
# process, as `pytest` alone). Twice the cores: much of the suite waits on processes it started
# (gateways, mlflow server, sandboxed workers, proxies) rather than computing (docs/development.md
# has the suite's time with two and with four workers on 2 cores).
# The slowest tests are listed at the end, so the suite's time can be kept an eye on from any
# CI log.
# The checkout's own bytecode is compiled first, as the venvs' is (.bytecode above): with
# PYTHONDONTWRITEBYTECODE set, each gateway, sync and CLI process the tests start compiled
# gateway/ and registry_sync/ from source again, about 0.4 s of the 5 s of CPU its imports take.
# compileall skips what is current; a file edited since is compiled in memory, as before.
TEST_WORKERS ?= $(shell n=$$(( $$(nproc) * 2 )); [ $$n -gt 8 ] && n=8; echo $$n)
test: lint interop-envs
	$(BIN)/python -m compileall -q gateway registry_sync migrations tests/support
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) --durations=15 $(PYTEST_ARGS)

# docs/settings.md, generated from the settings class (a test fails when it is stale).
docs: install
	$(BIN)/python -m gateway.settings_reference > docs/settings.md

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The OIP gRPC stubs (gateway/protocols/proto), checked in: regenerate after editing the .proto.
# The messages go to a descriptor pool of their own, not protobuf's default one, so a process
# that also imports Triton's client stubs (the same `inference` package in another file) loads both.
PROTO_DIR := gateway/protocols/proto
protos: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_DIR)/grpc_service.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default()\.AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(/' $(PROTO_DIR)/grpc_service_pb2.py
	grep -q '_descriptor_pool.DescriptorPool()' $(PROTO_DIR)/grpc_service_pb2.py
	for f in $(PROTO_DIR)/grpc_service_pb2.py $(PROTO_DIR)/grpc_service_pb2.pyi $(PROTO_DIR)/grpc_service_pb2_grpc.py; do \
		{ echo "# Generated by grpcio-tools $$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))') (protobuf $$($(BIN)/python -c 'import google.protobuf as p; print(p.__version__)')) with \`make protos\`; do not edit."; cat $$f; } > $$f.new && mv $$f.new $$f; \
	done

# The benchmark (bench/README.md): ~8 minutes; `make bench BENCH_ARGS=--quick` for a ~4-minute smoke run.
bench: install
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1) || \
		echo "wrk not installed: using bench/loadgen.py"
	@command -v h2load >/dev/null || (apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq nghttp2-client) >/dev/null 2>&1) || \
		echo "h2load not installed: the gRPC section skips its h2load rows"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(KSERVE_VENV) $(MLSERVER_VENV) $(MLFLOW2_VENV) $(DEMO) gateway-state.db .pytest_cache .mypy_cache .ruff_cache *.egg-info
