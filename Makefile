# Every target creates its own virtual environment from the pinned requirements on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv test test-unit test-integration test-e2e demo up down status bench lint build clean

# sam-cli and checkov pin versions that clash with the app's (boto3, packaging, ...): each gets its own
# virtual environment from its own pinned requirements file.
SAM_VENV ?= .venv-sam
CHECKOV_VENV ?= .venv-checkov
SAM_STAMP := $(SAM_VENV)/.installed
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
TEMPLATE := infra/template.yaml
TRANSLATED := .aws-sam/lint/template.json
LINT_REGION := eu-west-1
# Offline and quiet: no telemetry, no update checks, no checkov guideline download.
export SAM_CLI_TELEMETRY := 0
export SAM_CLI_DISABLE_UPDATE_CHECK := 1

help:
	@echo "make demo   - the whole job on the embedded sandbox (no AWS account, no Docker)"
	@echo "make test   - every test: unit, integration on moto, end to end on the sandbox"
	@echo "make up     - the sandbox as background services (.sandbox/endpoints.json)"
	@echo "make down   - stop them"
	@echo "make bench  - benchmarks next to a naive baseline (.sandbox/bench.json)"
	@echo "make lint   - ruff, cfn-lint, sam validate --lint, checkov (SAM and translated template)"
	@echo "make build  - sam build (python3.13, arm64) into .aws-sam/build"

$(STAMP): requirements/dev.txt requirements/runtime.txt pyproject.toml
	@test -x $(PY) || $$(tools/find-python) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

$(SAM_STAMP): requirements/lint-sam.txt
	@test -x $(SAM_VENV)/bin/python || $$(tools/find-python) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/lint-sam.txt
	@touch $@

$(CHECKOV_STAMP): requirements/lint-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $$(tools/find-python) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/lint-checkov.txt
	@touch $@

# checkov does not expand AWS::Serverless::*, so it also scans the template translated to plain
# CloudFormation (roles, functions, API stage). Deliberate exceptions sit next to their resource.
lint: $(STAMP) $(SAM_STAMP) $(CHECKOV_STAMP)
	$(VENV)/bin/ruff check functions layers cli sandbox tests tools
	$(VENV)/bin/cfn-lint $(TEMPLATE) sandbox/sample-app.yaml
	$(SAM_VENV)/bin/sam validate --lint --region $(LINT_REGION) --template-file $(TEMPLATE)
	@mkdir -p $(dir $(TRANSLATED))
	$(PY) tools/translate_template.py $(TRANSLATED)
	$(CHECKOV_VENV)/bin/checkov --framework cloudformation --skip-download --compact --quiet -f $(TEMPLATE)
	$(CHECKOV_VENV)/bin/checkov --framework cloudformation --skip-download --compact --quiet -f $(TRANSLATED)

# The Lambda runtime is python3.13: its interpreter goes first on PATH for sam's builders and for
# layers/deps/Makefile (no Docker needed).
build: $(SAM_STAMP)
	PATH="$$(dirname "$$(tools/find-python)"):$$PATH" $(SAM_VENV)/bin/sam build --template-file $(TEMPLATE)

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

# Benchmarks next to a naive baseline, as ratios; prints the table, writes .sandbox/bench.json.
bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .sandbox .pytest_cache .ruff_cache .hypothesis
