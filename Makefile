# Two commands for a newcomer: `make run` (service on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser run test lint format bench clean osrm-venv

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

# Bench-only OSRM peer (bench/osrm_peer.py): the osrm-bindings wheel ships osrm-extract/-contract/-routed and the
# car profile, built for CPython 3.12 (cp312-abi3), so this venv uses pyenv's 3.12 (OSRM_PYTHON overrides). Never shipped.
osrm-venv: .venv-osrm/.osrm-bindings-26.10.0

.venv-osrm/.osrm-bindings-26.10.0:
	@test -x .venv-osrm/bin/python || { \
	  py="$${OSRM_PYTHON:-$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -n1)}"; \
	  test -n "$$py" && test -x "$$py" || { echo "osrm-venv: no Python 3.12 found (pyenv versions/3.12*; or set OSRM_PYTHON)" >&2; exit 1; }; \
	  echo "$$py -m venv .venv-osrm"; "$$py" -m venv .venv-osrm; }
	.venv-osrm/bin/python -m pip install --quiet --disable-pip-version-check osrm-bindings==26.10.0
	.venv-osrm/bin/python -c "import pathlib, osrm; assert (pathlib.Path(osrm.__file__).parent / 'bin' / 'osrm-routed').is_file()"
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
