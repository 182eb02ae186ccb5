# The commands the README tells a newcomer to run. `make demo` and `make test` each do the set-up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false

.PHONY: setup demo test test-unit lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	PIP=$(BIN)/pip EXTRAS=dev sh docker/install.sh
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iea demo --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/pytest --durations=25

test-unit: $(STAMP)
	$(BIN)/pytest -m "not model and not flows and not services"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/interpret.py
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf outputs .pytest_cache
