# Two commands do all set-up on a fresh machine:
#   make run    sets up .venv and runs the tutorial's case study, writing reports/binary_classification
#   make test   sets up .venv and runs the checks, builds the docs and runs the tests (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACKERS := $(VENV)/.trackers
DOCS := $(VENV)/.docs
ARGS ?= --overwrite

.PHONY: run test test-fast lint docs install clean bench bench-trackers

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The tests of the MLflow and Optuna parts need their extras (not needed to run the case study).
$(TRACKERS): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[mlflow,optuna]"
	touch $(TRACKERS)

# The docs site's tools (Sphinx, furo, MyST): not needed to run or test monitor.
$(DOCS): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[docs]"
	touch $(DOCS)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/binary_classification.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check monitor tests examples scripts benchmarks
	$(BIN)/mypy --strict monitor

test: lint docs $(TRACKERS)
	$(BIN)/python -m pytest

# The site: docs/_build/html/index.html (the guides and the API from the docstrings); a warning fails it.
docs: $(DOCS)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

# The developer's loop: every test but the slow end-to-end ones (`make test` runs them all).
test-fast: $(TRACKERS)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[bench]"
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

bench-trackers: $(TRACKERS)
	$(BIN)/python benchmarks/bench_trackers.py

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
