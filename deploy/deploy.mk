# Deployment targets (included by the Makefile): the image, the chart's checks, podman kube play.
DEPLOY_APT := prometheus
IMAGE_APT := podman runc mmdebstrap catatonit golang-github-containernetworking-plugin-dnsname
IMAGE ?= localhost/hotline:dev
BASE_IMAGE := localhost/hotline-base:bookworm
CONTAINERS_CONF := $(CURDIR)/deploy/containers.conf
PODMAN := CONTAINERS_CONF=$(CONTAINERS_CONF) podman --runtime runc --cgroup-manager=cgroupfs
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BASE_PACKAGES := python3,python3-venv,libstdc++6,ca-certificates,tzdata

.PHONY: deploy-apt image-apt crd-models rules dashboards image image-base image-prompts test-deploy

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "apt: $(1) present"; fi
endef

deploy-apt: ## promtool and a Prometheus server for the rules and dashboard tests
	$(call apt_install,$(DEPLOY_APT))

image-apt: ## podman, runc, mmdebstrap for `make image` and `make test-deploy`
	$(call apt_install,$(IMAGE_APT))

crd-models: ## npm models that validate ServiceMonitor/PrometheusRule/Certificate (gitignored)
	@cd deploy/crd-validate && { [ -d node_modules/@kubernetes-models/prometheus-operator ] \
	  && [ node_modules/.package-lock.json -nt package-lock.json ]; } \
	  || npm ci --no-audit --no-fund --loglevel=error

rules: ## regenerate charts/hotline/rules/hotline.rules.yaml
	$(PY) deploy/rules.py

dashboards: ## regenerate charts/hotline/dashboards/*.json
	$(PY) deploy/dashboards.py

build/base.tar:
	@mkdir -p build
	# merged /usr set up by mmdebstrap's hook (usr-is-merged), not by the usrmerge package, which
	# would drag full Perl (~50 MB) into the image
	mmdebstrap --quiet --format=tar --variant=essential --include=$(BASE_PACKAGES) \
	  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	  --customize-hook='rm -rf "$$1"/var/cache/apt/* "$$1"/var/lib/apt/lists/*' \
	  bookworm $@.tmp
	mv $@.tmp $@

image-base: image-apt build/base.tar ## the Debian base image, from Debian's packages, in podman
	@$(PODMAN) image exists $(BASE_IMAGE) && [ "$$($(PODMAN) image inspect $(BASE_IMAGE) \
	  --format '{{index .Labels "hotline.base.tar"}}')" = "$$(stat -c %Y build/base.tar)" ] \
	  || { $(PODMAN) import --change 'LABEL hotline.base.tar=$(shell stat -c %Y build/base.tar 2>/dev/null)' \
	       build/base.tar $(BASE_IMAGE) >/dev/null && echo "imported $(BASE_IMAGE)"; }

build/wheels/.done: requirements.txt pyproject.toml
	@mkdir -p build/wheels
	$(PY) deploy/image_requirements.py > build/wheels/requirements.txt
	$(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: \
	  -r build/wheels/requirements.txt -d build/wheels
	@touch $@

image: image-base build/wheels/.done proto image-prompts ## one image for the five services (podman)
	@old=$$($(PODMAN) image inspect $(IMAGE) --format '{{.Id}}' 2>/dev/null); \
	$(PODMAN) build --pull=never --layers -t $(IMAGE) --build-arg REVISION=$(REVISION) \
	  -f Containerfile . || exit 1; \
	new=$$($(PODMAN) image inspect $(IMAGE) --format '{{.Id}}'); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then $(PODMAN) rmi "$$old" >/dev/null 2>&1 || true; fi
	@$(PODMAN) image inspect $(IMAGE) --format 'built {{index .RepoTags 0}} revision {{index .Labels "org.opencontainers.image.revision"}} size {{.Size}}'

image-prompts: ## the IVR prompts the image carries (var/prompts; idempotent)
	PYTHONPATH=services:$(GEN) $(PY) -m ivr.prompts var/prompts >/dev/null

test-deploy: image crd-models ## the image under `podman kube play` of the chart: a call end to end
	HOTLINE_TEST_DEPLOY=1 HOTLINE_IMAGE=$(IMAGE) $(PY) -m pytest -q -p no:cacheprovider \
	  tests/deploy/test_kube_play.py
