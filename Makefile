# Set-up on a fresh machine: `make run` (install + quickstart) and `make test` (install + suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test lint bench docs clean

# One stamp per set of extras: `make run` installs only what running needs, `make test` adds
# the test tools, `make bench` the benchmark's comparison libraries.
install: $(VENV)/.dev $(VENV)/.bench

$(VENV)/.run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.run
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.bench: $(VENV)/.run
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@

run: $(VENV)/.run
	$(BIN)/dlrun train configs/quickstart.yaml

# One worker per core; worksteal keeps a module's tests, and its shared runs, mostly on one.
test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# ruff, and import-linter's contracts (pyproject.toml): the layers, no cycles, no TensorFlow
# where reading runs.
lint: $(VENV)/.dev
	$(BIN)/lint-imports
	$(BIN)/ruff check dlrun tests bench
	$(BIN)/ruff format --check dlrun tests bench

# The documentation site (mkdocs.yml, docs/) into site/, strict as the suite builds it.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

bench: $(VENV)/.dev $(VENV)/.bench
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
