# The two commands of the README: `make demo` (the whole pipeline on synthetic Criteo data)
# and `make test` (every test, slow ones included). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint clean perf-analyzer

# The C loops of tts-data prepare are compiled by that install: a change to them reinstalls.
$(STAMP): pyproject.toml src/ttsrec/data/_kernels.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU torch wheel first: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# perf_analyzer for `tts-bench --engine perf_analyzer` and the agreement test: cached in .cache/, never fails
# the build (offline: the test skips with the reason).
perf-analyzer: $(STAMP)
	PYTHON=$(CURDIR)/$(BIN)/python bash scripts/install_perf_analyzer.sh

test: $(STAMP) perf-analyzer
	$(BIN)/python -m pytest -m "slow or not slow"

test-fast: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf runs data out model_repository/*/ .pytest_cache
