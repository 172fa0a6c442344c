# The two commands: `make up` (serve the bundled model at http://127.0.0.1:8080/v1) and
# `make test` (the whole suite, integration tests with real vLLM/Envoy/inference-perf included).
# Both install what is missing first; installs are cached and idempotent.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INFERSTACK := $(VENV)/bin/inferstack
PYTEST_ARGS ?=

.PHONY: setup up down status test unit integration clean

# The package's own venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "inferstack needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"'
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing inferstack into $(VENV)"
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

setup: $(VENV)/.installed
	@command -v kubectl >/dev/null || { echo "[setup] installing kubectl (Debian kubernetes-client)"; \
		apt-get update -qq && apt-get install -y -qq kubernetes-client; }
	@command -v prometheus >/dev/null || { echo "[setup] installing Prometheus (Debian prometheus, for up --monitoring)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@$(INFERSTACK) setup

up: setup
	$(INFERSTACK) up --replicas 2

down:
	$(INFERSTACK) down

status:
	$(INFERSTACK) status

# Two lanes (tests/conftest.py): the integration tests one at a time in one, the unit tests beside them.
test: setup
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit -q $(PYTEST_ARGS)

integration: setup
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
