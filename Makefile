# The two commands of the README:
#   make up    - install into .venv (first time) and run the whole stack
#   make test  - install into .venv (first time) and run the test suite
# Needs only Python 3.11+ (python3 on PATH, or PYTHON=/path/to/python3.11).
#   make docs        - build the documentation site into site/ (mkdocs, warnings are errors)
#   make test-matrix - the unit and Redis suites (and on 3.13 the tutorial) on Python 3.12 (constraints.txt) and
#                      3.13 (Django 6, redis-py 8) where pyenv has them; SKIP lines otherwise

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-fast test-matrix lint docs bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ProgRock needs Python 3.11 or newer, this is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# The distribution was called "progrock" before 0.1.0; drop that name from an old .venv.
	$(BIN)/python -m pip uninstall --quiet --yes progrock 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/progrock up $(ARGS)

test: $(STAMP)
	$(BIN)/python scripts/run-tests.py $(ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not browser and not packaging and not hosts" $(ARGS)

test-matrix: $(STAMP)
	$(BIN)/python scripts/test-matrix.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src

# NO_MKDOCS_2_WARNING: mkdocs-material's banner about MkDocs 2, printed on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .venv-matrix artifacts site .pytest_cache .mypy_cache .ruff_cache
