# The two README commands: `make demo` (a real backfill) and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
PORT ?= 3000
BENCH_MODE ?= short  # bench_alpaca: short (20 requests / 6 s) or full (200 / minute, ~15 min)

.PHONY: demo test faults lint dev dev-postgres bench chromium ui-check install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install  ## backfill 5 tickers x the first 20 sessions of 2024 through Dagster's daemon
	$(BIN)/backfill-assets demo

lint: install-dev  ## ruff and mypy (every function typed)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy backfill_assets benchmarks

test: lint  ## lint, then the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

faults: install-dev  ## only the fault suite (kill -9 mid-write, provider faults, bad input, exposure)
	$(BIN)/python -m pytest -m faults --fault-report=benchmarks/results/faults.md $(PYTEST_ARGS)
	$(BIN)/python benchmarks/readme.py

dev: install  ## the Dagster UI and daemon on http://127.0.0.1:$(PORT) (default 3000) for the project's DAGSTER_HOME
	$(BIN)/backfill-assets tickers sync
	$(BIN)/backfill-assets serve --port $(PORT)

# Team server: Dagster's instance and the data store on Postgres. Needs DAGSTER_PG_URL (instance
# database) and BACKFILL_POSTGRES_URL (data; may be the same database).
dev-postgres: export BACKFILL_INSTANCE = postgres
dev-postgres: export BACKFILL_STORE = postgres
dev-postgres: install  ## the same, with the instance and the store on Postgres
	$(BIN)/backfill-assets tickers sync
	$(BIN)/backfill-assets serve --port $(PORT)

bench: install-dev chromium  ## benchmark table (printed and written to benchmarks/results/)
	$(BIN)/python benchmarks/bench_daemon_alpaca.py $(if $(filter full,$(BENCH_MODE)),--full,)
	$(BIN)/python benchmarks/bench_partition_cost.py
	$(BIN)/python benchmarks/bench_label_reads.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_alpaca.py --mode $(BENCH_MODE)
	$(BIN)/python benchmarks/bench_labels.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_backfill.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_scale.py --planned-per-run
	$(BIN)/python benchmarks/readme.py

chromium:  ## Debian's chromium, for the pages rendered by ui-check and bench_scale
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

ui-check: install-dev chromium  ## headless Chromium renders the UI's bars partitions and backfills pages
	$(BIN)/python benchmarks/ui_check.py
	$(BIN)/python benchmarks/readme.py

clean:
	rm -rf $(VENV) .dagster_home .dagster_home_postgres data
