# The two commands of the README, plus tooling. Each target creates .venv and installs
# the pinned requirements when they changed, so a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The benchmarks run in a virtualenv of their own: requirements.txt plus requirements-bench.txt
# (Celery, RQ and redis-py, measured beside this service; see that file for why not in .venv).
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
# make run binds HOST:PORT when either is given (make run PORT=8001, HOST=0.0.0.0 make run),
# the other defaulting to 127.0.0.1 / 8000; with neither, gunicorn.conf.py binds GUNICORN_BIND
# (default 127.0.0.1:8000).
BIND_ARGS := $(if $(HOST)$(PORT),--bind $(or $(HOST),127.0.0.1):$(or $(PORT),8000))

# make run-split: gunicorn's workers as web nodes (FLASK_SCHEDULER_ROLE=web) plus SPLIT_WORKERS
# (default 1) worker processes (flask scheduler worker); Ctrl-C stops them all (split.py).
.PHONY: run run-split test lint clean bench bench-quick bench-dispatch bench-scale bench-accuracy bench-cluster bench-enqueue bench-batch bench-handoff bench-isolation bench-result-size bench-interleaved

$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	@echo "installing pinned requirements into $(VENV) (first run: about a minute)"
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	@echo "installing pinned requirements and test tools into $(VENV) (first run: a minute or two)"
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

$(BENCH_VENV)/.installed: requirements.txt requirements-bench.txt
	@echo "creating $(BENCH_VENV) with the pinned requirements and Celery, RQ (first run: about a minute)"
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

run: $(VENV)/.installed-runtime
	$(BIN)/gunicorn -c gunicorn.conf.py $(BIND_ARGS) wsgi:app

run-split: $(VENV)/.installed-runtime
	$(BIN)/python split.py $(BIND_ARGS)

# Lint and types first (seconds), then the whole suite on PYTEST_WORKERS processes (pytest-xdist,
# one test file per process at a time, so a file's module-scoped servers are started once): most
# tests wait on servers and subprocesses, so two processes take about 60 % of one's time on two
# cores. PYTEST_WORKERS=0 runs it in this process alone (pdb, -s, one file).
PYTEST_WORKERS ?= 2
test: lint
	sh tests/e2e/ensure_chromium.sh
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check scheduler_app config tests bench examples wsgi.py gunicorn.conf.py split.py
	$(BIN)/mypy

# Benchmarks (not tests): each starts what it measures on loopback and writes its section of
# bench/README.md and its key of bench/results.json. `make bench` runs them all (~50 min);
# BENCH_ARGS=--quick makes any one of them short, and writes to bench/work/ (ignored by git)
# instead, so one-repeat numbers never replace the committed ones. They run in $(BENCH_VENV),
# never in `make test`.
bench: bench-dispatch bench-scale bench-accuracy bench-cluster bench-enqueue bench-batch bench-handoff bench-isolation bench-result-size bench-interleaved

# This service beside the baselines, Celery and RQ (which need /usr/bin/redis-server).
bench-dispatch: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.run $(BENCH_ARGS)

bench-scale: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.scale $(BENCH_ARGS)

bench-accuracy: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.accuracy $(BENCH_ARGS)

bench-cluster: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.cluster $(BENCH_ARGS)

bench-enqueue: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.enqueue $(BENCH_ARGS)

# 10,000 runs: POST /api/runs/batch against one POST /api/runs per run (issue 15).
bench-batch: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.batch $(BENCH_ARGS)

# Issue 15's dispatch targets, the bare thread, the durable floor and this service interleaved.
bench-interleaved: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.interleaved $(BENCH_ARGS)

# How long a settle holds the writer with results of 0.6 KiB to 700 KiB.
bench-result-size: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.result_size $(BENCH_ARGS)

# POST /api/runs on a web node → task start on a worker node, wake-ups on and off (issue 12).
bench-handoff: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.handoff $(BENCH_ARGS)

# Process isolation beside thread runs: API latency under CPU-bound runs, hard cancels, cost.
bench-isolation: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.isolation $(BENCH_ARGS)

# A few minutes: dispatch latency, throughput and CPU against the baselines, Celery and RQ;
# results in bench/work/ (README.md, results.json), not the committed bench/README.md.
bench-quick: $(BENCH_VENV)/.installed
	$(BENCH_BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(BENCH_VENV) instance .pytest_cache
