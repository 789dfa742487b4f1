# Lüyue: `make run` (the main job on the embedded local stack) and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV_VERSION := 0.13.9
CACHE := .cache
UV := $(CACHE)/uv-bootstrap/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
LVYUE := $(VENV)/bin/lvyue
KAFKA_LIB_STAMP := deploy/kafka/target/lib/.complete
FERRETDB_BIN := deploy/ferretdb/bin/ferretdb-local
ARGS ?=
export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR := $(CURDIR)/$(CACHE)/uv

.PHONY: help setup python kafka ferretdb prometheus up down status run test lint typecheck unit integration clean bench bench-ingest bench-store bench-dispatch bench-e2e bench-report

help:
	@echo "make run     start the local stack in the foreground (Ctrl-C stops it); ARGS=--once exits after checks"
	@echo "make test    ruff, mypy, unit tests, then integration tests on a private Kafka + FerretDB + Prometheus"
	@echo "make setup   install everything (cached: a second run takes seconds)"
	@echo "make up / down / status   the local stack in the background"

# ---- setup: every install step lives here, cached by stamp files ------------------------------------
setup: python kafka ferretdb prometheus

python: $(VENV)/.synced
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(UV):
	@# Debian's own python3.11 ships venv separately (python3.11-venv).
	python$(PYTHON_VERSION) -m venv $(CACHE)/uv-bootstrap || { rm -rf $(CACHE)/uv-bootstrap; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python$(PYTHON_VERSION)-venv && \
	  python$(PYTHON_VERSION) -m venv $(CACHE)/uv-bootstrap; }
	$(CACHE)/uv-bootstrap/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python python$(PYTHON_VERSION)
	@touch $@

kafka: $(KAFKA_LIB_STAMP)
$(KAFKA_LIB_STAMP): deploy/kafka/pom.xml
	rm -rf deploy/kafka/target/lib
	cd deploy/kafka && mvn -B -q dependency:copy-dependencies
	@touch $@

ferretdb: $(FERRETDB_BIN)
$(FERRETDB_BIN): deploy/ferretdb/go.mod deploy/ferretdb/go.sum deploy/ferretdb/build.sh $(wildcard deploy/ferretdb/*.go)
	deploy/ferretdb/build.sh

prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
	  { $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || $(SUDO) service prometheus stop >/dev/null 2>&1 || true; }; }
	@# The package's own service would hold :9090; our stack runs its own Prometheus.

# ---- the local stack ------------------------------------------------------------------------------
up: setup
	$(LVYUE) stack up

down:
	@if [ -x $(LVYUE) ]; then $(LVYUE) stack down; else echo "nothing to stop (not set up)"; fi

status: python
	$(LVYUE) stack status

run: setup
	$(LVYUE) stack run $(ARGS)

# ---- checks ---------------------------------------------------------------------------------------
lint: python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: python
	$(VENV)/bin/mypy shared services sim ops tests

unit: python
	$(PY) -m pytest tests/unit -q

integration: setup
	$(PY) -m pytest tests/integration -q

test: setup lint typecheck
	cd deploy/ferretdb && go vet . && go test .
	$(PY) -m pytest tests/unit -q -p no:cacheprovider
	$(PY) -m pytest tests/integration -q -p no:cacheprovider

# ---- benchmarks (print figures; results also in bench-results/) ------------------------------------
bench: bench-ingest bench-dispatch bench-e2e bench-store bench-report

bench-store: setup
	$(LVYUE) bench store $(ARGS)

bench-ingest: setup
	$(LVYUE) bench ingest $(ARGS)

bench-dispatch: setup
	$(LVYUE) bench dispatch $(ARGS)

bench-e2e: setup
	$(LVYUE) bench e2e $(ARGS)

bench-report: setup
	$(LVYUE) bench report $(ARGS)

clean: down
	rm -rf .run
