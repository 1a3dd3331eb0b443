# splitlog: `make up` runs the whole system, `make test` runs the tests.
# Both create the virtual environment in .venv and install into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up up-processes test test-fast lint format protos check-protos buf-breaking bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/splitlog up

up-processes: $(STAMP)
	$(BIN)/splitlog up --processes

test: $(STAMP)
	$(BIN)/python tools/genproto.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	tools/buf.sh lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not system"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	tools/buf.sh lint

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

protos: $(STAMP)
	$(BIN)/python tools/genproto.py

check-protos: $(STAMP)
	$(BIN)/python tools/genproto.py --check

# Compare the protos with those of another commit: make buf-breaking REF=v1.0
REF ?= main
buf-breaking: $(STAMP)
	tools/buf.sh breaking-from $(REF)

bench: $(STAMP)
	$(BIN)/python -m bench.users

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
