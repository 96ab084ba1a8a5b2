# Two commands set everything up on a fresh machine (Python 3.11+ and make):
#   make demo   -- the main job on simulated hubs
#   make test   -- the test suite (about 10 min on 2 cores), with lint and type checks
# make test-all adds the long runs marked slow (kill campaigns, noisy links, many stations).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/station demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(ARGS)

test-all: lint
	$(BIN)/pytest -m 'not hardware' $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_an3155.py $(ARGS)

clean:
	rm -rf $(VENV) station-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
