# Two entry points for a fresh machine: `make demo` and `make test` (CI runs `make test`).
# The notebook tests run real kernels on ipykernel 7 (.venv) and on ipykernel 6 (.venv-ipykernel6).
PYTHON ?= python3
VENV ?= .venv
VENV6 ?= .venv-ipykernel6
BIN := $(VENV)/bin

.PHONY: demo test install install-test install-ipykernel6 lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV6)/bin/python:
	$(PYTHON) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

install-ipykernel6: $(VENV6)/bin/python
	$(VENV6)/bin/pip install --quiet -e ".[postgres,nats]" "ipykernel>=6.29,<7"

demo: install
	$(BIN)/python examples/demo.py

lint: install-test
	$(BIN)/ruff check omniq_nb tests benchmarks examples
	$(BIN)/ruff format --check omniq_nb
	$(BIN)/mypy omniq_nb

test: lint install-ipykernel6
	OMNIQ_TEST_IPYKERNEL6_PYTHON=$(abspath $(VENV6))/bin/python \
	$(BIN)/python -m pytest -q --cov=omniq_nb --cov-report=term-missing:skip-covered --cov-fail-under=90
