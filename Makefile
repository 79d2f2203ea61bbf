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

# pip byte-compiles every file it installs, one at a time (106 s of the test set-up's 192 s on 2
# cores), most of them never imported. Installed without that, each module is compiled at its first
# import and cached, once PYTHONDONTWRITEBYTECODE (set by many images) is not passed on: where it is,
# nothing compiled at import is kept and every process compiles torch again (723 s of tests, not 554).
PIP := $(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[test]"
	touch $(STAMP)

# What the tests and the docs need besides (the MLflow and Optuna extras, Sphinx), in one pip call:
# each call resolves and builds the editable package again (about 13 s).
$(DEV): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[test,mlflow,optuna,docs]"
	touch $(STAMP) $(DEV)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/binary_classification.py $(ARGS)

lint: $(DEV)
	$(BIN)/ruff check monitor tests examples scripts benchmarks
	$(BIN)/mypy --strict monitor

# The checks (ruff and mypy, Sphinx) beside the tests, which leave a core idle most of the time; their
# output after the tests'. Any failure fails the target.
test: $(DEV)
	@checks=$$(mktemp); ($(MAKE) --no-print-directory -j2 lint docs >$$checks 2>&1) & pid=$$!; \
	$(BIN)/python -m pytest; tests=$$?; wait $$pid; lint=$$?; \
	echo "--- ruff, mypy, sphinx-build:"; cat $$checks; rm -f $$checks; \
	test $$tests = 0 && test $$lint = 0

# The site: docs/_build/html/index.html (the guides and the API from the docstrings); a warning fails it.
docs: $(DEV)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# The developer's loop: every test but the slow end-to-end ones (`make test` runs them all).
test-fast: $(DEV)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(PIP) -e ".[bench]"
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
