# Two commands do all set-up on a fresh machine:
#   make run    sets up .venv and runs the tutorial's case study, writing reports/binary_classification
#   make test   sets up .venv and runs the checks, builds the docs and runs the tests (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := $(VENV)/.dev
ARGS ?= --overwrite

.PHONY: run test test-fast lint docs install clean bench bench-trackers

# pip byte-compiles what it installs one file at a time (106 s of the test set-up's 192 s on 2 cores);
# compileall does the same files on every core (65 s). They must be compiled at install: where
# PYTHONDONTWRITEBYTECODE is set nothing compiled at import is cached, and every process compiles
# torch again. A file that does not compile (a template, another Python's) is skipped, as pip skips it.
PIP := $(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt
COMPILE := $(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[test]"
	$(COMPILE)
	touch $(STAMP)

# What the tests and the docs need besides (the MLflow and Optuna extras, Sphinx), in one pip call:
# each call resolves and builds the editable package again (about 13 s).
$(DEV): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[test,mlflow,optuna,docs]"
	$(COMPILE)
	touch $(STAMP) $(DEV)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/binary_classification.py $(ARGS)

lint: $(DEV)
	$(BIN)/ruff check monitor tests examples scripts benchmarks
	$(BIN)/mypy --strict monitor

# The checks side by side (mypy and Sphinx each take one core), then the tests.
test: $(DEV)
	$(MAKE) --no-print-directory -j2 lint docs
	$(BIN)/python -m pytest

# The site: docs/_build/html/index.html (the guides and the API from the docstrings); a warning fails it.
docs: $(DEV)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# The developer's loop: every test but the slow end-to-end ones (`make test` runs them all).
test-fast: $(DEV)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(PIP) -e ".[bench]"
	$(COMPILE)
	$(BIN)/python benchmarks/bench_step_cost.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_checkpoint.py
	$(BIN)/python benchmarks/bench_history.py
	$(BIN)/python benchmarks/bench_review.py
	$(BIN)/python benchmarks/bench_import_memory.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_cadence.py
	$(BIN)/python benchmarks/bench_diagnosis.py
	$(BIN)/python benchmarks/bench_recovery.py

bench-trackers: $(DEV)
	$(BIN)/python benchmarks/bench_trackers.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
