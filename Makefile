# The project's commands. PY is the virtual environment's Python when there is one.
VENV ?= .venv
PY := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
PYTEST_ARGS ?=

.PHONY: help install test test-fast test-process run migrate

help:
	@echo "make install   create $(VENV) and install requirements.txt"
	@echo "make test      run the whole test suite against PostgreSQL (DATABASE_URL)"
	@echo "make run       web + qcluster + supervise together; Ctrl+C stops all three"

install:
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -r requirements.txt

test:
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -m "not process" $(PYTEST_ARGS)

test-process:
	$(PY) -m pytest -m process $(PYTEST_ARGS)

migrate:
	$(PY) manage.py migrate --noinput

# One process group: Ctrl+C (or any of the three dying) stops all of them.
run: migrate
	@trap 'kill 0' INT TERM EXIT; \
	$(PY) manage.py runserver 127.0.0.1:$${PORT:-8000} & \
	$(PY) manage.py qcluster & \
	$(PY) manage.py supervise & \
	wait -n
