# The two commands of the README:
#   make up    - install into .venv (first time) and run the whole stack
#   make test  - install into .venv (first time) and run the test suite
# Needs only Python 3.11+ (python3 on PATH, or PYTHON=/path/to/python3.11).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-fast lint bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ProgRock needs Python 3.11 or newer, this is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/progrock up $(ARGS)

test: $(STAMP)
	$(BIN)/python scripts/run-tests.py $(ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not browser" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) artifacts .pytest_cache .mypy_cache .ruff_cache
