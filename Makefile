# Hotline — see README.md. Every target works on a fresh machine after `make setup`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := sip-tester chromium espeak-ng sox
PROTOS := $(wildcard protos/hotline/v1/*.proto)
GEN := services/common/generated

.PHONY: setup apt venv proto prompts run test test-unit test-e2e bench postgres clean

setup: apt deploy-apt venv proto prompts crd-models ## everything a fresh machine needs
	@echo "setup complete"

apt: ## system tools the tests need (SIPp, Chromium, espeak-ng, sox)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "apt: all present"; fi

venv: ## virtualenv with the pinned Python dependencies and the source paths
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@$(PY) -c "import sysconfig, pathlib; root = pathlib.Path('.').resolve(); \
	pathlib.Path(sysconfig.get_paths()['purelib'], 'hotline.pth').write_text( \
	f'{root}/services\n{root}/$(GEN)\n')"

proto: ## generated protobuf/gRPC code
	@mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)

prompts: ## IVR prompts (espeak-ng) and hold music into var/prompts
	$(PY) -m ivr.prompts

run: ## the whole platform locally; Ctrl-C stops it
	$(PY) -m common.stack

postgres: ## make sure the local PostgreSQL the tests use is running
	@if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; fi

test: postgres ## the full suite: unit, integration, end-to-end (no tests collected = failure)
	@$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAILED: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit:
	$(PY) -m pytest -q tests/unit

test-e2e:
	$(PY) -m pytest -q tests/e2e

bench: ## benchmarks, each printing ratios against a baseline run in the same command
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var $(GEN)

include deploy/deploy.mk
