# Prompt Builder API — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" setuptools wheel
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with test and dev extras (pinned)

run: $(STAMP) ## Serve on port 3001 (PORT to change) with gunicorn + gevent
	$(BIN)/gunicorn -c config/gunicorn.conf.py wsgi:app

test: $(STAMP) ## Run the whole test suite
	$(BIN)/pytest

lint: $(STAMP) ## Check style and formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## Type-check the services with mypy
	$(BIN)/mypy

bench: $(STAMP) ## Measure key, cache and coalescer costs and cached throughput vs bare Flask (needs wrk)
	$(BIN)/python -m loadtest.bench

loadtest: $(STAMP) ## Locust against the service and a fake upstream (PROFILE=basic|stress, SCALE=1.0)
	$(BIN)/python -m loadtest.run --profile $${PROFILE:-basic} --scale $${SCALE:-1.0}

bench-seed: $(STAMP) ## The seed document's before/after table, measured (optimizations off vs on)
	$(BIN)/python -m loadtest.bench_seed

fake-upstream: $(STAMP) ## Run the fake model API on port 8089 (LATENCY seconds)
	$(BIN)/python -m loadtest.fake_upstream --port 8089 --latency $${LATENCY:-1.0}

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info

.PHONY: help install run test lint format typecheck bench bench-seed loadtest fake-upstream clean
