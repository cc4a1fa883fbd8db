# Quick start: `make run` serves on 127.0.0.1:8080 with config.yaml; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-container container-image lint migrations clean bench soak

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "nudgespot-segment needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/nudgespot-segment migrate
	$(BIN)/nudgespot-segment serve

# tests/container (a real image, podman and podman-compose) is left to `make test-container`.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest --ignore=tests/container $(PYTEST_ARGS)

# The container image: the wheels of the project and its dependencies are built here, at the
# versions installed in .venv; the image build then needs no network (Containerfile), and
# keeps no intermediate images (--layers=false: a rebuild takes about 15 s anyway).
IMAGE ?= localhost/nudgespot-segment:latest
CONTAINER_BASE ?= python:3.11-slim
container-image: $(VENV)/.installed-run
	rm -rf build/container-wheels build/lib build/bdist.*
	mkdir -p build
	$(BIN)/python -m pip list --format=freeze --exclude-editable \
	  | grep -viE '^(pip|setuptools|wheel)==' > build/container-constraints.txt
	$(BIN)/python -m pip wheel --quiet . -w build/container-wheels -c build/container-constraints.txt
	podman build --network=none --layers=false --format docker --build-arg BASE=$(CONTAINER_BASE) \
	  -t $(IMAGE) -f Containerfile .

# Builds the image and runs it for real with podman: SQLite with a volume, then compose.yaml
# (PostgreSQL 15 and two replicas). Installs Debian's podman tools when they are missing.
test-container: $(VENV)/.installed-test
	sh tests/container/ensure-podman.sh
	$(BIN)/python -m pytest tests/container $(PYTEST_ARGS)

# Resilience soak: tests/resilience with ×20 events and durations (crash, outage, PostgreSQL
# restart, replicas). The default `make test` runs the same tests at their small sizes.
soak: $(VENV)/.installed-test
	NUDGESPOT_SOAK=1 $(BIN)/python -m pytest -q tests/resilience

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

# For developers: write a migration after changing models/tables.py.
migrations: $(VENV)/.installed-test
	$(BIN)/tortoise makemigrations
	rm -rf data/makemigrations.sqlite3*

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmark against the baselines (bare aiohttp, raw request.post) on SQLite and, when
# reachable, PostgreSQL. BENCH_ARGS=--quick for a tenth of the sizes.
bench: $(VENV)/.installed-run
	$(BIN)/python -m bench.run $(BENCH_ARGS)
