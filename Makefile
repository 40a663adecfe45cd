# LinkEdge developer entry points. Everything installs what it needs; safe to re-run.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
BUILD       := build
WHEELHOUSE  := $(BUILD)/wheelhouse
BASE_IMAGE  ?= debian:bookworm-slim
DEMO_IMAGE  ?= linkedge/aps-classifier:demo
export LINKEDGE_WHEELHOUSE := $(abspath $(WHEELHOUSE))

.PHONY: help setup docker base-image wheelhouse test-tools release lint test test-unit \
        test-integration demo clean

help:
	@echo "make demo   train on the APS data, build the image, run it, send it real rows"
	@echo "make test   lint + every test (installs Docker, base image, wheelhouse as needed)"

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

docker:
	bash scripts/ensure-docker.sh

base-image: setup docker
	$(BIN)/python -m inference_image base-image --name $(BASE_IMAGE)

wheelhouse: setup
	$(BIN)/python -m inference_image wheelhouse --out $(WHEELHOUSE)

test-tools:
	bash scripts/ensure-test-tools.sh

# The project's own CI build: train, gate, build, smoke-test, publish (playbooks/build.yml).
release: setup docker base-image wheelhouse
	$(BIN)/ansible-playbook playbooks/build.yml

lint: setup
	$(BIN)/ruff check inference_image tests
	$(BIN)/ruff format --check inference_image tests

test-unit: setup
	$(BIN)/pytest -q -m "not docker" tests

test-integration: setup docker base-image wheelhouse test-tools
	$(BIN)/pytest -q -m docker tests

test: lint setup docker base-image wheelhouse test-tools release
	$(BIN)/pytest -q tests

demo: setup docker base-image wheelhouse
	BIN=$(BIN) IMAGE=$(DEMO_IMAGE) bash scripts/demo.sh

clean:
	rm -rf $(BUILD) .pytest_cache .ruff_cache
