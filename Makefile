# The two commands of the README: `make demo` and `make test`. Both set everything up themselves.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: install demo test lint validate dev api clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Generate demo data, run every Dagster asset end to end on embedded defaults, print accuracy.
demo: $(STAMP)
	$(BIN)/recon demo

## Lint, type-check, validate the Dagster definitions, run the tests (PostgreSQL/Redis started if down).
test: $(STAMP)
	@bash scripts/services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/pytest --cov --cov-report=term:skip-covered

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## The Dagster UI over the demo's data (http://127.0.0.1:3000).
dev: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml

api: $(STAMP)
	$(BIN)/recon api

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/logs dagster_home/schedules .pytest_cache
