# Developer entry points. `make test` is what CI runs (.ci/run), from a clean clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.11 is required (pyproject: >=3.11,<3.12); plain python3 is the fallback where it is 3.11.
PYTHON ?= $(shell python3.11 -c 'import sys' >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: the venv is rebuilt whenever pyproject.toml changes.
STAMP := $(VENV)/.installed

.PHONY: help install chromium demo run test lint bench clean

help:
	@echo "make install  create $(VENV), install switchboard with its dev tools, and Chromium"
	@echo "make demo     run a sample batch through a private local stack"
	@echo "make run      run API, workers (dial, webhooks), beat, Flower and the sandbox carrier"
	@echo "make test     ruff, ruff format --check, mypy and pytest (what CI runs)"
	@echo "make lint     ruff and mypy only"
	@echo "make bench    run bench/dispatch.py"
	@echo "make clean    remove the venv, caches and local state"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required; run make PYTHON=/path/to/python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The dashboard test drives a real headless Chromium; Debian's packages, installed once (as root).
# apt-get update runs only when the install fails, e.g. for a missing package list.
CHROMIUM_PACKAGES := chromium chromium-driver

chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES) \
		|| { apt-get update && apt-get install -y --no-install-recommends $(CHROMIUM_PACKAGES); }; \
	fi

install: $(STAMP) chromium

demo: $(STAMP)
	$(BIN)/switchboard demo

run: $(STAMP)
	$(BIN)/switchboard run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker shared cli sandbox

test: install lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/dispatch.py $(ARGS)

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
