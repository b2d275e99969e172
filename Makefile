# The README's first two commands: `make run` and `make test`. Both start from a bare clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CREDITS_ENV ?= dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install dev run test lint typecheck pytest schema bench bench-load-generator clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

# The GraphQL-over-HTTP audit suite (npm graphql-http), pinned by its lock file. Where npm is missing, the rest
# of `make test` runs and the suite's one test says it was skipped (CI requires it: .ci/run).
CONFORMANCE := $(if $(shell command -v npm),tests/conformance/node_modules/.package-lock.json)

tests/conformance/node_modules/.package-lock.json: tests/conformance/package-lock.json
	cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error

install: $(VENV)/.installed

dev: $(VENV)/.installed-test $(CONFORMANCE)

run: install
	CREDITS_ENV=$(CREDITS_ENV) $(BIN)/credits-graphql migrate
	CREDITS_ENV=$(CREDITS_ENV) $(BIN)/credits-graphql serve --host $(HOST) --port $(PORT)

lint: dev
	$(BIN)/ruff check src tests

typecheck: dev
	$(BIN)/mypy src

pytest: dev
	$(BIN)/pytest

test: lint typecheck pytest

# The load generator of bench/run.py: wrk, Debian's package (apt-get needs root).
bench-load-generator:
	@command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk \
		|| { apt-get update && apt-get install -y --no-install-recommends wrk; } \
		|| { echo "make bench needs wrk: install Debian's package wrk" >&2; exit 1; }

# Not part of `make test`: several minutes of load on both cores.
bench: dev $(VENV)/.installed-bench bench-load-generator
	$(BIN)/python bench/breakdown.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/history.py

schema: install
	$(BIN)/credits-graphql export-schema > schema.graphql

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis credits.db credits.db-wal credits.db-shm credits.db-writer
