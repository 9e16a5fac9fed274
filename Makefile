# The two commands of the README, plus tooling. Each target creates .venv and installs
# the pinned requirements when they changed, so a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint clean bench bench-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

run: $(VENV)/.installed-runtime
	$(BIN)/gunicorn -c gunicorn.conf.py --bind $(HOST):$(PORT) wsgi:app

# Lint and types first (seconds), then the whole suite.
test: lint
	sh tests/e2e/ensure_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check scheduler_app config tests bench wsgi.py gunicorn.conf.py
	$(BIN)/mypy

# Benchmarks (not tests): start every system under test on loopback and compare.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) instance .pytest_cache
