# mailgate: every set-up step lives here, so a fresh machine needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo check test lint bench clean

$(STAMP): pyproject.toml sandbox/infra/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	cd sandbox/infra && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP)

# The main job on the embedded default: preflight, gated deploy and postmerge for all four
# partitions in the local sandbox world; reports land in reports/<run>/ (reports/latest).
demo: $(STAMP)
	$(BIN)/python -m sandbox demo

# The fast tier (under a minute): lint, types and the pure tests (no server, no subprocess, no pytest run;
# tests_unit/conftest.py sorts the suite's tests into pure, pytester and world by the fixtures they use), with
# 20 examples per property test instead of `make test`'s 150.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	MAILGATE_HYPOTHESIS_PROFILE=check $(BIN)/pytest tests_unit -m pure -q -p hypothesispytest

# The suite's own tests (lint first): probes, plugins, sandbox scenarios. Gate runs load only the plugins
# pyproject.toml names; the suite's tests add hypothesis's (its seeds and statistics).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest tests_unit -n 2 -q -p pytester -p hypothesispytest

# Benchmarks against the sandbox (bench/RESULTS.md says what they measured and why).
bench: $(STAMP)
	$(BIN)/python -m bench.postmerge && $(BIN)/python -m bench.preflight

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -f reports/latest && rm -rf $(VENV) sandbox/infra/node_modules reports/*/
