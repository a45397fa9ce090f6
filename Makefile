# Two commands for a newcomer: `make run` (service on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser run test lint format bench clean

install: $(STAMP)

# torch first, pinned: pip takes the CPU build from this machine's disk; a resolver
# left to itself would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

run: install
	$(BIN)/routing db upgrade
	$(BIN)/routing import-map --if-empty
	$(BIN)/routing tokens ensure-dispatcher
	$(BIN)/routing serve

# Headless Chromium from Debian for the admin UI's browser tests (runs as root; idempotent).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: install browser
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/graph.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
