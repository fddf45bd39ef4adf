# Set-up and everyday commands. Each Python target creates its own venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WATCH_DIR ?= data
# The benchmarks' own venv (the upstream-shaped stand-in's pandas, scikit-learn, matplotlib; watchmedo):
# never the watcher's.
BENCH_VENV ?= .venv-bench

# Container targets (replace cyclesafe's setup.sh). COMPOSE is Docker's by default;
# `make COMPOSE=podman-compose up` works too.
COMPOSE ?= docker compose
COMPOSE_FILES ?= -f compose.yaml
CS_PORT ?= 8009
VERIFY_URL ?= http://127.0.0.1:$(CS_PORT)/rest/score
TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' modelgen_watcher/__init__.py)

.PHONY: help run test unit integration e2e bench bench-quick bench-venv reliability static-checks containers-check ci docs \
        build up verify logs down clean clean-venv k3d-up k3d-deploy

help:
	@echo "make run               - the watcher on ./$(WATCH_DIR) with the embedded reference model"
	@echo "make test              - the Python test suite (unit, integration, end-to-end)"
	@echo "make unit|integration|e2e - one part of the suite"
	@echo "make static-checks     - ruff, mypy, hadolint, Compose schema, kubernetes-validate, checkov"
	@echo "make containers-check  - build and run the stack with podman, end to end"
	@echo "make docs              - write docs/configuration.md from the settings classes"
	@echo "make bench             - every benchmark side by side (about 28 min; makes $(BENCH_VENV) on first use):"
	@echo "                         drop-to-result against the bare model and the peers (watchmedo, entr,"
	@echo "                         inotifywait, the old loop), an upstream-shaped model with each runner,"
	@echo "                         drain rate (one watcher, and 1-3 shared ones), a warm worker's memory over"
	@echo "                         10,000 requests, idle cost"
	@echo "make bench-quick       - the same, small (a few minutes): to try a change, not for RESULTS.md"
	@echo "make bench-venv        - the benchmarks' own venv, $(BENCH_VENV)"
	@echo "make reliability       - the long runs behind docs/RELIABILITY.md (about 15 min)"
	@echo "make build|up|verify|logs|down|clean  - the stack with Docker Compose"
	@echo "make k3d-up|k3d-deploy - a local Kubernetes cluster (k3d) and the stack on it"
	@echo "make clean-venv        - remove the venvs and the tools"

$(BIN)/modelgen-watcher: pyproject.toml modelgen_watcher/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/modelgen-watcher
	$(BIN)/modelgen-watcher run --watch-dir $(WATCH_DIR)

test: $(BIN)/modelgen-watcher
	$(BIN)/python -m pytest

unit integration e2e: $(BIN)/modelgen-watcher
	$(BIN)/python -m pytest tests/$@

# One run, every script in turn; bench/RESULTS.md records this one. entr and inotifywait come from
# Debian (apt-get install entr inotify-tools); where missing, their rows say so.
bench: $(BIN)/modelgen-watcher $(BENCH_VENV)/.installed
	$(BIN)/python bench/latency.py --watchmedo $(BENCH_VENV)/bin/watchmedo
	$(BIN)/python bench/upstream_shaped.py --bench-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/shared_drain.py
	$(BIN)/python bench/worker_memory.py
	$(BIN)/python bench/idle.py

bench-quick: $(BIN)/modelgen-watcher $(BENCH_VENV)/.installed
	$(BIN)/python bench/latency.py --watchmedo $(BENCH_VENV)/bin/watchmedo --requests 20 --slow-requests 5
	$(BIN)/python bench/upstream_shaped.py --bench-python $(BENCH_VENV)/bin/python --requests 5 --phase-runs 1
	$(BIN)/python bench/drain.py --requests 200 --min-seconds 2
	$(BIN)/python bench/shared_drain.py --requests 200
	$(BIN)/python bench/worker_memory.py --requests 1000
	$(BIN)/python bench/idle.py --sizes 10,1000 --window 15

# A stamp, not the venv's python: touching that symlink would touch the system's interpreter.
$(BENCH_VENV)/.installed: bench/standin/requirements.txt bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/standin/requirements.txt -r bench/requirements.txt
	@touch $@

bench-venv: $(BENCH_VENV)/.installed

# The long runs behind docs/RELIABILITY.md: decode memory, a 10-minute soak, 100 kill -9s.
reliability: $(BIN)/modelgen-watcher
	$(BIN)/python bench/decode_memory.py
	$(BIN)/python bench/soak.py --minutes 10
	$(BIN)/python bench/killloop.py --kills 100

# docs/configuration.md is generated from modelgen_watcher/settings.py; tests/unit/test_docs_config.py
# fails when the committed file differs.
docs: $(BIN)/modelgen-watcher
	$(BIN)/python -m modelgen_watcher.docs_config > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

static-checks: $(BIN)/modelgen-watcher
	bash scripts/static-checks.sh

containers-check:
	bash tests/containers/run.sh

ci: test static-checks containers-check

# --- the stack (what setup.sh used to do) ---------------------------------------

build:
	$(COMPOSE) $(COMPOSE_FILES) build

up:
	$(COMPOSE) $(COMPOSE_FILES) up -d --build --wait

# POST a route, GET its result by key; the checks hold for any model (exact scores only for the reference model).
verify:
	@bash scripts/verify.sh $(VERIFY_URL)

logs:
	$(COMPOSE) $(COMPOSE_FILES) logs --tail=100

# --remove-orphans: podman-compose otherwise stops only the replicas the compose files name, not those
# of a --scale beyond them (Docker's compose removes them either way).
down:
	$(COMPOSE) $(COMPOSE_FILES) down --remove-orphans

clean:
	$(COMPOSE) $(COMPOSE_FILES) down -v --remove-orphans --rmi all

clean-venv:
	rm -rf $(VENV) $(BENCH_VENV) .tools .podman build *.egg-info .pytest_cache

# --- Kubernetes on a local k3d cluster ------------------------------------------

k3d-up:
	k3d cluster create --config deploy/k3d.yaml

k3d-deploy:
	docker build -f Dockerfile.modelgen -t yoinkbird/cs_modelgen:$(TAG) .
	docker build -f Dockerfile.server -t yoinkbird/cs_server:$(TAG) .
	k3d image import -c cyclesafe yoinkbird/cs_modelgen:$(TAG) yoinkbird/cs_server:$(TAG)
	kubectl apply -k deploy/k8s
	kubectl -n cyclesafe rollout status deployment/cyclesafe --timeout=120s
