# Two commands matter: `make run` (the whole system on its embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RESULTS_DIR ?= ./test_results
ARGS   ?=

.PHONY: run test lint typecheck pytest bench schemas system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@if [ ! -d "$(RESULTS_DIR)" ]; then \
		mkdir -p "$(RESULTS_DIR)" && cp examples/test_results_*.json "$(RESULTS_DIR)/" && \
		echo "Created $(RESULTS_DIR) and seeded it with the example runs from examples/"; \
	fi
	$(BIN)/transcode-energy up --results-dir "$(RESULTS_DIR)" $(ARGS)

system-deps:
	@bash scripts/ensure-system-deps.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: for this project that is a broken suite, not a pass.
pytest: $(VENV)/.installed-test system-deps
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; \
	exit $$rc

test: lint typecheck pytest

bench: $(VENV)/.installed-test system-deps
	$(BIN)/python -m bench

schemas: $(VENV)/.installed-run
	$(BIN)/transcode-energy schema --out docs/schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis var
