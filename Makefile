# `make run` starts the whole stack; `make test` runs every test. Both install what is missing.
PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
TOOLS := .tools
PIPENV := $(TOOLS)/bin/pipenv
STAMP := .venv/.synced
NODE_STAMP := node_modules/.installed

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_VERBOSITY := -1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1

.PHONY: run test lint bench worker clean

run: $(STAMP)
	$(PIPENV) run python -m app.stack

test: $(STAMP) $(NODE_STAMP)
	$(PIPENV) run pytest

# Start a private Redis, gunicorn and workers, measure, print tables, write docs/benchmark.png.
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick --only worker".
bench: $(STAMP)
	$(PIPENV) run bench $(BENCH_ARGS)

lint: $(STAMP)
	$(PIPENV) run ruff check .
	$(PIPENV) run ruff format --check .
	$(PIPENV) run mypy

worker: $(STAMP)
	./worker.sh

$(PIPENV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check pipenv==$(PIPENV_VERSION)

$(STAMP): Pipfile.lock | $(PIPENV)
	$(PIPENV) --python $(PYTHON) sync --dev
	touch $@

# newman, which runs the Postman collection in the tests. Without npm that test is skipped.
$(NODE_STAMP): package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: the Postman collection's test (newman) will be skipped."; \
	fi

clean:
	rm -rf .venv $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
