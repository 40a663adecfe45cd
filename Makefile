# LinkEdge developer entry points. Everything installs what it needs; safe to re-run.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
BUILD       := build
WHEELHOUSE  := $(BUILD)/wheelhouse
BASE_IMAGE  ?= debian:bookworm-slim
DEMO_IMAGE  ?= linkedge/aps-classifier:demo
export LINKEDGE_WHEELHOUSE := $(abspath $(WHEELHOUSE))

.PHONY: help setup docker base-image wheelhouse test-tools release lint sanity truck-image \
        molecule-releases molecule molecule-fleet molecule-resilience molecule-mqtt molecule-pull bench test test-unit test-integration test-arm64 demo demo-image clean

help:
	@echo "make demo   build a release, provision 2 simulated trucks with site.yml, query them"
	@echo "make test   lint + sanity + every test (unit, fuzz, integration, modules) + molecule default, fleet, resilience, mqtt, pull"

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
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook playbooks/build.yml

lint: setup
	$(BIN)/ruff check inference_image tests plugins molecule bench scripts
	$(BIN)/ruff format --check inference_image tests plugins molecule bench scripts
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint

# ansible-test sanity for plugins/ (in a copy under build/ansible_collections/linkedge/edge).
sanity: setup
	BIN=$(abspath $(BIN)) bash scripts/ansible-sanity.sh

test-unit: setup
	$(BIN)/pytest -q -m "not docker" tests

test-integration: setup docker base-image wheelhouse test-tools
	$(BIN)/pytest -q -m "docker and not arm64" tests

# arm64: QEMU set up (inference_image/image/ensure-binfmt.sh), the aarch64 wheelhouse, the arm64
# image built from the same bundle, smoke-tested under emulation, compared bit for bit with amd64.
test-arm64: setup docker base-image wheelhouse
	$(BIN)/python -m inference_image wheelhouse --platform linux/arm64 --out $(WHEELHOUSE)
	$(BIN)/pytest -q -m arm64 tests/integration/test_image_arm64.py

# Simulated trucks: systemd + (after docker_engine) a nested Docker engine.
truck-image: docker base-image
	bash molecule/resources/sim-truck/build.sh

# v1, v2, v3 and the fleet scenario's v1-bad, built before make test's lanes start (a
# scenario's dependency step then only finds them present).
molecule-releases: setup docker base-image wheelhouse
	BIN=$(BIN) bash scripts/molecule-releases.sh
	$(BIN)/python molecule/fleet/bad_release.py

molecule: setup truck-image molecule-releases
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test

# Four simulated trucks: canary, waves, bad version, offline truck, rollback.
molecule-fleet: setup truck-image molecule-releases
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s fleet

# One simulated truck: power cuts during transfer, load and handover; a full disk.
molecule-resilience: setup truck-image molecule-releases
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s resilience

# A truck and a depot broker: predictions over MQTT, ACLs, a switch, a broker restart and a
# power cut under traffic, store-and-forward across a cut depot link.
molecule-mqtt: setup truck-image molecule-releases
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s mqtt

# Pull mode: three trucks and a depot (nginx, registry, broker) over TLS; channels, a promotion
# with no controller, an offline truck catching up, the registry down, a power cut mid-pull,
# refused pointers, key rotation and revocation, the fleet read at the depot.
molecule-pull: setup truck-image molecule-releases
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test -s pull

# What the scenarios need is built first (once); then two lanes run side by side
# (scripts/lanes.py): the five scenarios one after another, and, at a lower CPU priority (nice 10),
# lint, sanity, the project's own release build and pytest, which take the time the scenarios
# spend waiting (systemd, brokers, timers) without slowing their timed parts. (Measured: the
# pytest lane ended 30 min before the scenarios' lane.) Each lane's log is in build/ci-logs/; a
# summary of every part's time and the CPU use ends it. (Three lanes, two scenarios at once,
# measured slower: every phase was CPU-bound.)
MOLECULE_TEST := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/molecule test
test: setup docker base-image wheelhouse test-tools truck-image molecule-releases
	$(BIN)/python scripts/lanes.py --log-dir $(BUILD)/ci-logs \
	  --lane checks "nice -n 10 $(MAKE) --no-print-directory lint sanity release" \
	    "nice -n 10 $(BIN)/pytest -q --durations=40 tests" \
	  --lane molecule '$(MOLECULE_TEST) -s pull' '$(MOLECULE_TEST) -s mqtt' '$(MOLECULE_TEST) -s fleet' \
	    '$(MOLECULE_TEST) -s resilience' '$(MOLECULE_TEST)'

# LinkEdge vs MLServer side by side under wrk (about 7 min): bench/results/latest.{json,md,png}.
# MQTT end to end beside HTTP runs on its own: .venv/bin/python -m bench --case mqtt (bench/README.md).
bench: setup docker base-image wheelhouse
	$(BIN)/python -m bench --build

demo: setup docker base-image wheelhouse truck-image
	BIN=$(BIN) bash scripts/demo-fleet.sh

# The single-container demo: train, build, run the image locally, send it real rows.
demo-image: setup docker base-image wheelhouse
	BIN=$(BIN) IMAGE=$(DEMO_IMAGE) bash scripts/demo.sh

clean:
	rm -rf $(BUILD) .pytest_cache .ruff_cache
