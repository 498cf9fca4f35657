# Entry points. Each target creates and uses the local virtual environment in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint format train compare bench system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m service

test: $(STAMP) system-deps
	scripts/lint
	scripts/test

lint: $(STAMP)
	scripts/lint

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

train: $(STAMP)
	$(PY) -m training

compare: $(STAMP)
	$(PY) -m evaluation

bench: $(STAMP)
	$(PY) -m bench.run_bench

system-deps:
	scripts/install-system-deps
