# Two commands for a fresh Debian machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then $(BIN)/ferry viewer install || echo "viewer not installed; Ferry runs without it"; \
	else echo "npm not found: the viewer at /viewer needs it once (sudo apt-get install npm; then $(BIN)/ferry viewer install)"; fi
	$(BIN)/ferry admin bootstrap-demo
	$(BIN)/ferry serve

# worksteal: a process with nothing left takes tests queued for the other (the slow ones are
# collected first, see tests/conftest.py), so neither idles at the end.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

screenshots: $(STAMP)
	FERRY_SCREENSHOTS=docs/screenshots $(BIN)/pytest -n 0 -q tests/portal/pages

bench: $(STAMP)
	$(BIN)/python bench/dicomweb.py

clean:
	rm -rf $(VENV) var .pytest_cache
