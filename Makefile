# The project's commands. Each installs the virtual environment first if it is missing or stale.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo bench lint test test-fast test-process test-resilience run migrate

help:
	@echo "make demo      train, backtest out of sample, cancel, resume and compare on a bare machine (SQLite under var/, no services)"
	@echo "make test      the import contracts (make lint), then the whole test suite against PostgreSQL (DATABASE_URL, default 127.0.0.1:5432)"
	@echo "make bench     training checkpoint cost; backtest engine speed and checkpoint cost; load; failover; throughput (PostgreSQL)"
	@echo "make run       web + qcluster + supervise together; Ctrl+C stops all three"
	@echo "make install   create $(VENV) and install requirements.txt"

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# Every part runs, even after one fails; then the figures beside their goals (benchmarks/goals.py), and the
# status says whether every part ran to its end.
bench: export BENCH_REPORT := $(abspath var/bench-report.jsonl)
bench: $(STAMP)
	mkdir -p var && rm -f "$$BENCH_REPORT"
	status=0; \
	for part in checkpoint_cost backtest_speed load failover throughput; do \
		$(PY) benchmarks/$$part.py || { echo "make bench: $$part failed" >&2; status=1; }; \
	done; \
	$(PY) benchmarks/goals.py; exit $$status

# The layers of the code (pyproject.toml, docs/architecture.md): an import against them fails, named.
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-logo --no-cache

# Two test processes (pytest-xdist): the process tests run in one of them, in order, the others beside them.
TEST_PROCESSES ?= -n 2 --dist loadgroup

test: lint
	$(PY) -m pytest $(TEST_PROCESSES) $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not process" $(PYTEST_ARGS)

test-process: $(STAMP)
	$(PY) -m pytest -m process $(PYTEST_ARGS)

# The resilience suite alone; RESILIENCE_RUNS=5 runs each scenario five times as often (a soak).
test-resilience: $(STAMP)
	$(PY) -m pytest -m resilience $(PYTEST_ARGS)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

# Ctrl+C stops all three (scripts/run.sh).
run: migrate
	PY=$(PY) scripts/run.sh
