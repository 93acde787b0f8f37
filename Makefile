# Prompt Builder API — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Two install levels: serving needs only the runtime dependencies; tests and tools add the extras.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
BENCH := $(VENV)/.installed-bench
DEPS := setup.cfg pyproject.toml constraints.txt

.DEFAULT_GOAL := help

help: ## Show this help
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; fi; \
	grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -v on="$$on" -v off="$$off" \
	  'BEGIN {FS = ":.*?## "} {name[NR] = $$1; text[NR] = $$2; if (length($$1) > w) w = length($$1)} \
	   END {for (i = 1; i <= NR; i++) printf "  %s%-*s%s  %s\n", on, w, name[i], off, text[i]}'

$(RUNTIME): $(DEPS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" setuptools wheel
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(DEV)

$(BENCH): $(DEV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,dev,bench]"
	touch $(BENCH)

install: $(DEV) ## Create .venv with the service, test and dev tools (pinned by constraints.txt)

run: $(RUNTIME) ## Serve on port 3001 (PORT to change) with gunicorn + gevent; installs only what serving needs
	$(BIN)/gunicorn -c config/gunicorn.conf.py wsgi:app

worker: $(RUNTIME) ## Run jobs only (JOB_CONCURRENCY at once) from the queue the servers fill: Redis with REDIS_URL, else this machine's
	$(BIN)/python -m app.jobs.worker

test: $(DEV) ## Every module's behaviour: unit + real gunicorn/Redis/nginx/Prometheus (README: how long)
	$(BIN)/pytest -n 2 --dist worksteal --durations=10

test-fleet: $(DEV) ## The fleet's fault drills, Redis Cluster and Sentinel, a 30 s soak, make cluster (README: how long)
	$(BIN)/pytest --no-cov --durations=10 tests/fleet

fuzz: $(DEV) ## Deep schemathesis campaign (EXAMPLES=500 per operation; SEED=<n> replays, else a fresh one)
	FUZZ_EXAMPLES=$${EXAMPLES:-500} FUZZ_SEED=$${SEED:-random} FUZZ_PHASES=examples,coverage,fuzzing,stateful \
	  $(BIN)/pytest -s --no-cov tests/integration/test_hostile_input.py -k schemathesis

graphql-schema: $(DEV) ## Write docs/schema.graphql, the GraphQL SDL built from the operations' pydantic models
	$(BIN)/python -c "from app.graph.schema import schema_sdl; open('docs/schema.graphql', 'w').write(schema_sdl())"

# ariadne-codegen needs graphql-core 3.2 (the service runs 3.3): it gets a venv of its own.
CODEGEN := .venv-codegen
graphql-client: graphql-schema ## Generate the typed Python client (clients/python/) from docs/schema.graphql
	test -x $(CODEGEN)/bin/ariadne-codegen || ($(PYTHON) -m venv $(CODEGEN) && $(CODEGEN)/bin/pip install --quiet "ariadne-codegen==0.19.0")
	rm -rf clients/python/prompt_builder_client
	cd clients/python && ../../$(CODEGEN)/bin/ariadne-codegen --config pyproject.toml client

lint: $(DEV) ## Check style and formatting with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(DEV) ## Type-check app/, config/, loadtest/ and wsgi.py with mypy
	$(BIN)/mypy

bench: $(BENCH) ## The hot path's figures against their floors, as ratios, and docs/bench-ratios.png (needs wrk)
	$(BIN)/python -m loadtest.bench --chart docs/bench-ratios.png

loadtest: $(DEV) ## Locust against the service and a fake upstream (PROFILE=basic|stress, SCALE=1.0)
	$(BIN)/python -m loadtest.run --profile $${PROFILE:-basic} --scale $${SCALE:-1.0}

bench-edge: $(BENCH) ## The edge tier (L3): nginx's hit against Python's through the same nginx, and its size (needs wrk)
	$(BIN)/python -m loadtest.bench_edge

bench-seed: $(DEV) ## The seed document's before/after table, measured (optimizations off vs on)
	$(BIN)/python -m loadtest.bench_seed

replay: $(DEV) ## Cache policies on a request trace, offline (TRACE=a file or a shape: team-day, drifting, video-heavy, one-offs; all when unset)
	$(BIN)/python -m loadtest.replay $${TRACE:+--trace $$TRACE} $${REPLAY_ARGS}

soak: $(DEV) ## The fleet under steady mixed load for SECONDS=600 (RATE=40/s): RSS slope, fds, greenlets, errors
	$(BIN)/python -m loadtest.soak --seconds $${SECONDS:-600} --rate $${RATE:-40}

cluster: $(RUNTIME) ## A fleet in the foreground: Redis + INSTANCES=2 instances x WORKERS=2 from FIRST_PORT=3101 + JOB_WORKERS=2 job workers + nginx on CLUSTER_PORT=8080
	$(BIN)/python -m loadtest.cluster --instances $${INSTANCES:-2} --workers $${WORKERS:-2} --job-workers $${JOB_WORKERS:-2} \
	  --port $${CLUSTER_PORT:-8080} --first-port $${FIRST_PORT:-3101}

fake-upstream: $(RUNTIME) ## Run the fake model API (FAKE_PORT=8089, LATENCY=1.0 seconds) and print how to use it
	$(BIN)/python -m loadtest.fake_upstream --port $${FAKE_PORT:-8089} --latency $${LATENCY:-1.0}

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) $(CODEGEN) .pytest_cache .ruff_cache .mypy_cache .hypothesis .schemathesis *.egg-info

.PHONY: help install run worker test test-fleet fuzz graphql-schema graphql-client lint format typecheck bench bench-edge bench-seed replay loadtest soak cluster fake-upstream clean
