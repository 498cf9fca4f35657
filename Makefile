# Entry points. Each target creates and uses the local virtual environment in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PEERS_STAMP := $(VENV)/.peers-installed

.PHONY: serve test lint format train compare bench system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The benchmark's peer servers (bench/peers/) are an optional extra, installed only for the benchmark.
$(PEERS_STAMP): pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,peers]'
	touch $(PEERS_STAMP)

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

bench: $(STAMP) $(PEERS_STAMP)
	$(PY) -m bench.run_bench

system-deps:
	scripts/install-system-deps
