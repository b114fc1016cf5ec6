# Two commands matter: `make run` (the whole system on its embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RESULTS_DIR ?= ./test_results
ARGS   ?=

.PHONY: run test test-latest lock lint typecheck pytest bench schemas system-deps clean

# Every install takes exact versions and their hashes from requirements/ (see requirements/README.md);
# `--no-deps` because the lock already lists every transitive dependency, so nothing unpinned slips in.
PIP_LOCKED := -m pip install --quiet --require-hashes --no-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the lock changes. The project itself goes in editable, without build isolation, so
# its build backend is the locked setuptools rather than whatever is newest.
$(VENV)/.installed-run: requirements/run.txt pyproject.toml | $(BIN)/python
	$(BIN)/python $(PIP_LOCKED) -r requirements/run.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-test: requirements/test.txt pyproject.toml | $(BIN)/python
	$(BIN)/python $(PIP_LOCKED) -r requirements/test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
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

# The suite against the newest releases that pyproject.toml allows, in a venv of its own, lock untouched:
# what an upgrade would break, before anyone chooses it (`make lock`). Not run by CI.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	touch $(LATEST)/.installed-run $(LATEST)/.installed-test
	$(LATEST)/bin/python -m pip list --format freeze | grep -v '^transcode-energy' > $(LATEST)/versions.txt
	@echo "testing against: $$(tr '\n' ' ' < $(LATEST)/versions.txt)"
	$(MAKE) --no-print-directory test VENV=$(LATEST)

# Upgrade every pin on purpose: newest releases pyproject.toml allows, for Python 3.11+ on every platform
# (one universal file, markers where a release differs by Python version). Review the diff, run `make test`.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-emit-index-url --custom-compile-command "make lock"
lock: | $(BIN)/python
	$(BIN)/python $(PIP_LOCKED) -r requirements/tools.txt
	$(UV_COMPILE) --upgrade requirements/tools.in -o requirements/tools.txt
	$(UV_COMPILE) --upgrade pyproject.toml requirements/build.in --extra test -o requirements/test.txt
	$(UV_COMPILE) pyproject.toml requirements/build.in -c requirements/test.txt -o requirements/run.txt
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra qoe -c requirements/test.txt -o requirements/qoe.txt
	$(MAKE) --no-print-directory schemas
	@git --no-pager diff --stat -- requirements docs/schemas 2>/dev/null || true

bench: $(VENV)/.installed-test system-deps
	$(BIN)/python -m bench

schemas: $(VENV)/.installed-run
	$(BIN)/transcode-energy schema --out docs/schemas

clean:
	rm -rf $(VENV) $(LATEST) .mypy_cache .ruff_cache .pytest_cache .hypothesis var
