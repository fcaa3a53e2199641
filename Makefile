# Certwright: `make run` brings the stack up against a local Pebble; `make test` runs the whole suite.
PYTHON := .venv/bin/python
# Files starting with an underscore are shared code, not benchmarks.
BENCHES := $(sort $(filter-out bench/_%,$(wildcard bench/*.py)))

.PHONY: run test bench lint format bootstrap manage docker-images docker-test

bootstrap:
	@bash devstack/bootstrap.sh

run: bootstrap
	$(PYTHON) -m devstack

# manage.py with `make run`'s environment: make manage ARGS="domains-show www.example.com"
manage:
	$(PYTHON) -m devstack manage $(ARGS)

test: bootstrap
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The images of docker/compose.yml, from a debootstrap base and wheels built here (no registry).
docker-images: bootstrap
	$(PYTHON) -m devstack.docker_images

# docker/compose.yml for real: build, up, issue the demo certificate, verify it through the edge, down.
docker-test: bootstrap
	$(PYTHON) -m devstack.docker_test

bench: bootstrap
	@set -e; for b in $(BENCHES); do echo "== $$b"; $(PYTHON) $$b; done

lint: bootstrap
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	.venv/bin/lint-imports

format: bootstrap
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .
