# Quick start: `make run` serves on 127.0.0.1:8080 with config.yaml; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint migrations clean bench soak

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

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
