# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test processes, each with its own stack (tests/conftest.py): waits dominate the suite.
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=
CHAOS_ARGS ?=

.PHONY: demo test lint check prereqs venv stack-up stack-down stack-status bench chaos clean

prereqs:
	@deploy/prereqs.sh

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: prereqs $(STAMP)

demo: venv
	$(BIN)/bluegreen stack up
	$(BIN)/bluegreen demo $(DEMO_ARGS)

test: $(STAMP)
	@deploy/prereqs.sh --with-test-tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

stack-up: venv
	$(BIN)/bluegreen stack up

stack-down: $(STAMP)
	$(BIN)/bluegreen stack down

stack-status: $(STAMP)
	$(BIN)/bluegreen stack status

bench: venv
	$(BIN)/bluegreen stack up
	$(BIN)/bluegreen bench $(BENCH_ARGS)

# Randomized fault injection: 20 runs at 60,000 blue rows; exit 1 when a run diverged.
chaos: venv
	$(BIN)/bluegreen stack up
	$(BIN)/bluegreen chaos --runs 20 --seed 1 --products 60000 --keep-going --report reports/chaos.json $(CHAOS_ARGS)

clean:
	-$(BIN)/bluegreen stack down
	rm -rf .bluegreen .bluegreen-test* $(VENV) .pytest_cache .mypy_cache .ruff_cache
