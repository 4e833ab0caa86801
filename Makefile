# mxknock: `make help` lists the targets. Everything runs as root (namespaces, netfilter).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_DIR := /run/mxknock-demo
DEMO_PREFIX ?= mxk

.PHONY: help deps venv test unit integration lint fuzz demo demo-down clean

help:
	@echo "make deps        install Debian packages and the Python venv (root; needs apt and PyPI)"
	@echo "make test        unit + integration tests (root; builds namespaces)"
	@echo "make unit        unit tests only (no root needed)"
	@echo "make demo        lab of namespaces with mxknockd on the embedded default; leaves it up"
	@echo "make demo-down   tear the demo lab down"
	@echo "make lint        ruff"
	@echo "make fuzz        the property-based fuzzers, long run (HYPOTHESIS_PROFILE=fuzz; make unit runs them bounded)"
	@echo "make bench       benchmarks against same-run baselines; writes bench/results.md (root)"
	@echo "make image       the bootable appliance image (mkosi); make vm, make image-test: see make image-help"

# Debian packages the product and its tests need; see also tests/lab/REQUIREMENTS.txt.
deps:
	bash .ci/install-deps

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,console]'
	touch $@

test: venv
	$(PY) -m pytest -q tests

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q -m integration tests/integration

# The same property tests as `make unit`, with many more (random) examples per test.
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/unit/test_fuzz_*.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: venv
	$(PY) -m tests.lab up --prefix $(DEMO_PREFIX) --with-daemon

demo-down: venv
	$(PY) -m tests.lab down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

include bench/bench.mk
include image/image.mk
