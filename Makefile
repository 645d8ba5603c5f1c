# Hotline — see README.md. Every target works on a fresh machine after `make setup`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := sip-tester chromium espeak-ng sox baresip kamailio fonts-wqy-zenhei
PROTOS := $(wildcard protos/hotline/v1/*.proto)
GEN := services/common/generated

.PHONY: setup apt venv proto develop prompts certs run test test-unit test-e2e bench postgres clean lint \
	typecheck format soak

setup: apt deploy-apt venv proto develop prompts certs crd-models ## everything a fresh machine needs
	@echo "setup complete"

apt: ## system tools the tests need (SIPp, Chromium, espeak-ng, sox, baresip, kamailio; CJK font for the zh-CN desk)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "apt: all present"; fi

venv: ## virtualenv with the pinned Python dependencies
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt

develop: proto ## the project installed editable (after proto: the generated `hotline` package is part of it)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

proto: ## generated protobuf/gRPC code, with typed stubs for messages and services (mypy-protobuf)
	@mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --grpc_python_out=$(GEN) \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(GEN) \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN) \
	  $(PROTOS)
	@test -f $(GEN)/hotline/__init__.py || touch $(GEN)/hotline/__init__.py $(GEN)/hotline/v1/__init__.py

prompts: ## IVR prompts (espeak-ng) and hold music into var/prompts
	$(PY) -m ivr.prompts

certs: ## the local CA and each service's gRPC certificate under var/tls (kept while valid)
	$(PY) -m common.certs

run: certs ## the whole platform locally; Ctrl-C stops it (ACD_REPLICAS=2: with an ACD hot standby)
	$(PY) -m common.stack --acd-replicas $(or $(ACD_REPLICAS),1)

postgres: ## make sure the local PostgreSQL the tests use is running
	@if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; fi

test: postgres ## the full suite: unit, integration, end-to-end (no tests collected = failure); lists the 25 slowest (budget ~20 min on 2 cores)
	@$(PY) -m pytest -q -p no:cacheprovider --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAILED: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit:
	$(PY) -m pytest -q tests/unit

test-e2e:
	$(PY) -m pytest -q tests/e2e

soak: postgres ## fault soak, full profile: calls at 20/s with every process killed -9 in turn (minutes; `make test` runs the short one)
	HOTLINE_SOAK=$${HOTLINE_SOAK:-full} $(PY) -m pytest -q -p no:cacheprovider -s \
	  --override-ini addopts= tests/soak

lint: ## ruff (pycodestyle, pyflakes, import order, bugbear, naming) and the formatter's check
	$(VENV)/bin/ruff check services tests bench deploy
	$(VENV)/bin/ruff format --check services tests bench deploy

format: ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix services tests bench deploy
	$(VENV)/bin/ruff format services tests bench deploy

typecheck: ## mypy, strict on services/ (generated protobuf code through its .pyi stubs)
	$(VENV)/bin/mypy

bench: ## benchmarks, each printing ratios against a baseline run in the same command
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var $(GEN)

include deploy/deploy.mk
