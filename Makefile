# Two commands on a fresh machine: `make run` (set up, then serve) and `make test` (set up, then test).
# Every set-up step is idempotent and quick once done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup database browser age run test lint bench clean

help:
	@echo "make run    set up everything, then serve on http://127.0.0.1:5000 (HOST/PORT override)"
	@echo "make test   set up everything, then lint, type-check and run the whole test suite"
	@echo "make bench  set up everything, then run the benchmarks (not part of make test)"

setup: $(STAMP) database

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	@echo "Installing the pinned Python dependencies into $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# The database the project starts when MONGODB_URI is unset: mongod if on PATH, else FerretDB on
# PostgreSQL (installed with apt-get when root and missing; otherwise the set-up says how), FerretDB
# built with Go into tools/ the first time; FerretDB on SQLite only where PostgreSQL cannot be had.
database: $(STAMP)
	@$(PY) -m cryptofiles.dev.database ensure

# What the web page's tests drive: Debian's Chromium (installed with apt-get when root and missing;
# otherwise the set-up says how) and Node; and `npm ci` of the pinned tus-js-client in tests/js/tus
# for the tus interop tests (only when node_modules is missing or stale). The service needs none.
browser: $(STAMP)
	@$(PY) -m cryptofiles.dev.browser ensure

# The stock age CLI (Go module filippo.io/age), which the sealed-key interop tests open keys with;
# built with `go install` into tools/age/bin the first time. The service itself never runs it.
age: $(STAMP)
	@$(PY) -m cryptofiles.dev.age ensure

run: setup
	$(PY) -m cryptofiles.dev.serve

lint: $(STAMP)
	$(PY) -m ruff check cryptofiles tests scripts bench
	$(PY) -m ruff format --check cryptofiles tests scripts bench
	$(PY) -m mypy

# The suite in two processes (pytest-xdist), each test file whole in one of them (its module's
# server started once): about 11 minutes on 2 cores instead of 18.
TEST_WORKERS ?= 2
test: setup browser age lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) tools .pytest_cache .mypy_cache .ruff_cache
