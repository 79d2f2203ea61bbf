# Two commands do all set-up on a fresh machine:
#   make run    sets up .venv and runs the tutorial's case study, writing reports/binary_classification
#   make test   sets up .venv and runs the checks and the tests (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACKERS := $(VENV)/.trackers
ARGS ?= --overwrite

.PHONY: run test test-fast lint install clean bench bench-trackers

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The tests of the MLflow and Optuna parts need their extras (not needed to run the case study).
$(TRACKERS): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[mlflow,optuna]"
	touch $(TRACKERS)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python examples/binary_classification.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check monitor tests examples scripts benchmarks
	$(BIN)/mypy --strict monitor

test: lint $(TRACKERS)
	$(BIN)/python -m pytest

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
	rm -rf $(VENV) build *.egg-info
