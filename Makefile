# The README's first two commands: `make run` and `make test`. Both start from a bare clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CREDITS_ENV ?= dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install dev run test lint typecheck pytest schema bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

dev: $(VENV)/.installed-test

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

schema: install
	$(BIN)/credits-graphql export-schema > schema.graphql

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis credits.db credits.db-wal credits.db-shm
