# Every target builds the virtual environment it needs from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test lint unit integration demo bench crds manifests clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make test: lint, type-check, then the whole test suite against real Redis and PostgreSQL
test: lint
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv
	$(PY) -m pytest -q tests/integration

## make demo: server + Redis (when available) + three workers, a batch of tasks, the routing shown
demo: venv
	$(PY) -m codetether_worker.demo

## make bench: every benchmark under tests/bench, numbers printed and kept in tests/bench/results/
bench: venv
	@set -e; for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

## make crds: regenerate crds/*.yaml from the pydantic models
crds: venv
	$(PY) -m codetether_operator.crdgen

## make manifests: regenerate the chart's crds/, the plain install manifest and the GitOps pieces
manifests: crds
	$(PY) scripts/update_install_artifacts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
