# Every target creates its own virtual environment from the pinned requirements on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv test test-unit test-integration test-e2e demo up down status bench lint clean

help:
	@echo "make demo   - the whole job on the embedded sandbox (no AWS account, no Docker)"
	@echo "make test   - every test: unit, integration on moto, end to end on the sandbox"
	@echo "make up     - the sandbox as background services (.sandbox/endpoints.json)"
	@echo "make down   - stop them"

$(STAMP): requirements/dev.txt requirements/runtime.txt pyproject.toml
	@test -x $(PY) || $$(tools/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

demo: $(STAMP)
	$(PY) -m gdpr_sandbox.demo

up: $(STAMP)
	$(PY) -m gdpr_sandbox up

down: $(STAMP)
	$(PY) -m gdpr_sandbox down

status: $(STAMP)
	$(VENV)/bin/gdprctl status

clean:
	rm -rf $(VENV) .sandbox .pytest_cache .ruff_cache .hypothesis
