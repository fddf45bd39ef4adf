# Set-up and everyday commands. Each target creates its own venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WATCH_DIR ?= data

.PHONY: run test unit integration bench clean help

help:
	@echo "make run    - start the watcher on ./$(WATCH_DIR) with the embedded reference model"
	@echo "make test   - run the whole test suite"
	@echo "make bench  - run the benchmarks in bench/"

$(BIN)/modelgen-watcher: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/modelgen-watcher
	$(BIN)/modelgen-watcher run --watch-dir $(WATCH_DIR)

test: $(BIN)/modelgen-watcher
	$(BIN)/python -m pytest

unit: $(BIN)/modelgen-watcher
	$(BIN)/python -m pytest tests/unit

integration: $(BIN)/modelgen-watcher
	$(BIN)/python -m pytest tests/integration

bench: $(BIN)/modelgen-watcher
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
