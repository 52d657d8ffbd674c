# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY_VERSION ?= 3.12.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := .venv-apt
APT_PACKAGES := rabbitmq-server postgresql munge slurmctld slurmd slurm-client
PYTEST_ARGS ?=

.PHONY: setup system venv test test-quick lint demo bench clean

setup: system venv

# Debian packages the twin and the tests start as their own processes (never as services).
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	PYENV_VERSION=$(PY_VERSION) python3.12 -m venv $(VENV) || python3.12 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev,twin]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy engine checks

test: setup lint
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

test-quick: venv
	$(BIN)/pytest -q -m "not twin and not postgres and not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/runbook validate
	$(BIN)/runbook plan local-restart --site local --instrument LAB \
	  -p state_file=/tmp/runbook-demo-service -o /tmp/runbook-demo-plan.json
	-$(BIN)/runbook diagnose local-disk --site local --instrument LAB \
	  -p marker=/tmp/runbook-demo-marker
	$(BIN)/runbook diagnose local-disk --site local --instrument LAB \
	  -p marker=/tmp/runbook-demo-marker --format json | head -40 || true

bench: venv
	$(BIN)/python benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
