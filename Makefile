# Developer entry points. `make test` is what CI runs (.ci/run), from a clean clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.11 is required (pyproject: >=3.11,<3.12); plain python3 is the fallback where it is 3.11.
PYTHON ?= $(shell python3.11 -c 'import sys' >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: the venv is brought up to date whenever pyproject.toml or
# a lock file changes.
STAMP := $(VENV)/.installed
# The lock files (pip-tools): every package with its exact version and hashes. runtime.txt is
# what the production image installs; dev.txt adds the embedded servers and the dev tools, with
# the same versions of everything runtime.txt pins. `make lock` writes both from pyproject.toml.
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
# pip-compile against the public index alone, whatever pip configuration this machine has (a
# local wheel cache or mirror would put hashes of its own files in the lock).
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock"
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	--no-emit-index-url --no-emit-find-links

.PHONY: help install chromium promtool lock demo run test lint bench clean

help:
	@echo "make install  create $(VENV), install switchboard with its dev tools, Chromium and promtool"
	@echo "make lock     pin every dependency of pyproject.toml in requirements/*.txt (hashes)"
	@echo "make demo     run a sample batch through a private local stack (BROKER=rabbitmq, PROVIDER=sip_trunk|vobiz too)"
	@echo "make run      run API, workers (dial, webhooks), beat, Flower and the sandbox carrier"
	@echo "make test     ruff, ruff format --check, mypy and pytest (what CI runs)"
	@echo "make lint     ruff and mypy only"
	@echo "make bench    run bench/dispatch.py"
	@echo "make clean    remove the venv, caches and local state"

# The locked versions, hash-checked, then switchboard itself on top of them, editable, with the
# locked setuptools (no build isolation, which would fetch an unpinned one).
$(STAMP): pyproject.toml $(RUNTIME_LOCK) $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required; run make PYTHON=/path/to/python3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e '.[embedded,dev]'
	$(BIN)/python -m pip check
	touch $@

# Run after changing dependencies in pyproject.toml; versions already locked are kept unless
# pyproject.toml rules them out (`make lock UPGRADE=--upgrade` moves everything to the newest).
# It needs only pip-tools, not an up-to-date venv: the locks may lack a dependency just added.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet 'pip-tools>=7.4,<8'
	$(LOCK_ENV) $(BIN)/pip-compile $(LOCK_FLAGS) $(UPGRADE) \
		--output-file $(RUNTIME_LOCK) pyproject.toml
	$(LOCK_ENV) $(BIN)/pip-compile $(LOCK_FLAGS) $(UPGRADE) --extra embedded --extra dev \
		--constraint $(RUNTIME_LOCK) --output-file $(DEV_LOCK) pyproject.toml

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

# The alerting rules test runs promtool (tests/deploy/test_alerts.py); Debian's prometheus
# package holds it, installed the same way.
PROMTOOL_PACKAGES := prometheus

promtool:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool: $$(command -v promtool)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $(PROMTOOL_PACKAGES) \
		|| { apt-get update && apt-get install -y --no-install-recommends $(PROMTOOL_PACKAGES); }; \
	fi

install: $(STAMP) chromium promtool

# BROKER=rabbitmq carries the demo's messages in the RabbitMQ of RABBITMQ_URL (a virtual host
# of its own, made with rabbitmqctl and deleted afterwards) instead of Redis; so does a
# SWITCHBOARD_BROKER_URL in the environment.
# PROVIDER=sip_trunk or PROVIDER=vobiz dials the sample batch from a caller number of that
# provider (the sandbox carrier plays each); twilio by default.
BROKER ?= redis
RABBITMQ_URL ?= amqp://guest:guest@127.0.0.1:5672//
PROVIDER ?= twilio

demo: $(STAMP)
ifeq ($(BROKER),rabbitmq)
	SWITCHBOARD_BROKER_URL='$(RABBITMQ_URL)' $(BIN)/switchboard demo --provider '$(PROVIDER)'
else ifeq ($(BROKER),redis)
	$(BIN)/switchboard demo --provider '$(PROVIDER)'
else
	$(error BROKER is redis or rabbitmq, not $(BROKER))
endif

run: $(STAMP)
	$(BIN)/switchboard run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker shared cli sandbox

# The suite runs in TEST_WORKERS processes (pytest-xdist), sharing one PostgreSQL and one Redis;
# most of a full-stack test's time is spent waiting on calls, so more processes than cores pay.
# The project's modules are compiled first: the suite starts some 300 Python processes (APIs,
# workers), which otherwise each compile them again where PYTHONDONTWRITEBYTECODE is set.
TEST_WORKERS ?= 4
COMPILED := api worker shared cli sandbox harness
test: install lint
	$(BIN)/python -m compileall -q $(COMPILED)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/dispatch.py $(ARGS)

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
