# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY_VERSION ?= 3.12.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := .venv-apt
# chromium: the dashboard's browser test (Playwright drives Debian's build); pango: WeasyPrint;
# poppler-utils: the tests read the PDF reports back (pdftotext).
APT_PACKAGES := rabbitmq-server postgresql munge slurmctld slurmd slurm-client \
  chromium libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core poppler-utils
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
	$(BIN)/pytest -q -ra -n 3 --dist loadgroup $(PYTEST_ARGS)

test-quick: venv
	$(BIN)/pytest -q -m "not twin and not postgres and not slow" $(PYTEST_ARGS)

# The twin for SPB in .twin with sim/scenarios/demo.yaml (online, then two causes of 10.2),
# the 10.2 diagnosis (exit 1: findings, which is the point) and a restart plan; the trap
# takes the twin down whatever happens, and prints how long it all took.
DEMO_DIR ?= .twin
demo: setup
	$(BIN)/runbook validate
	@set -eu; t0=$$(date +%s); export COLUMNS=$${COLUMNS:-120} RUNBOOK_SIM_DIR="$(abspath $(DEMO_DIR))"; \
	trap 'rc=$$?; $(BIN)/runbook sim down --dir "$$RUNBOOK_SIM_DIR" || rc=1; \
	      echo "make demo: $$(( $$(date +%s) - t0 )) s"; exit $$rc' EXIT; \
	$(BIN)/runbook sim up --instruments SPB --dir "$$RUNBOOK_SIM_DIR" \
	  --scenario sim/scenarios/demo.yaml; \
	rc=0; $(BIN)/runbook diagnose no-online-data --site sim --instrument SPB || rc=$$?; \
	[ $$rc -le 1 ] || { echo "diagnose failed with exit code $$rc"; exit $$rc; }; \
	$(BIN)/runbook plan restart-online --site sim --instrument SPB \
	  -o "$$RUNBOOK_SIM_DIR/restart-online.plan.json"

bench: venv
	$(BIN)/python benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
