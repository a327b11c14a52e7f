# actgrad: `make serve` and `make test` set up everything on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 50051

.PHONY: install serve test check lint format types stubs stubs-check unit integration clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/actgrad serve --host $(HOST) --port $(PORT)

stubs: install
	scripts/generate_stubs.sh $(PY)

# Regenerates the stubs into a scratch folder and fails on any difference.
stubs-check: install
	scripts/check_stubs.sh $(PY)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: install
	$(VENV)/bin/mypy client/actgrad server/actgrad_server

check: stubs-check lint types

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

test: check
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
