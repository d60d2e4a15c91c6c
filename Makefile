# Two entry points for a fresh machine: `make demo` and `make test` (CI runs `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

demo: install
	$(BIN)/python examples/demo.py

lint: install-test
	$(BIN)/ruff check omniq_nb tests benchmarks examples
	$(BIN)/ruff format --check omniq_nb
	$(BIN)/mypy omniq_nb

test: lint
	$(BIN)/python -m pytest -q --cov=omniq_nb --cov-report=term-missing:skip-covered --cov-fail-under=90
