# `make run` starts the whole stack; `make test` runs every test. Both install what is missing.
PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
TOOLS := .tools
PIPENV := $(TOOLS)/bin/pipenv
STAMP := .venv/.synced
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.synced
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
bench: $(STAMP) $(BENCH_STAMP)
	$(PIPENV) run bench --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

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

# The benchmark's servers and workers run from a virtualenv with what production installs
# (Pipfile's [packages], on the development venv's Python): development packages would be
# measured too (RQ imports Playwright's greenlet when it finds it).
$(BENCH_STAMP): Pipfile.lock $(STAMP)
	rm -rf $(BENCH_VENV)
	.venv/bin/python -m venv $(BENCH_VENV)
	$(PIPENV) requirements > $(BENCH_VENV)/requirements.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(BENCH_VENV)/requirements.txt
	touch $@

# newman, which runs the Postman collection in the tests. Without npm that test is skipped.
$(NODE_STAMP): package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: the Postman collection's test (newman) will be skipped."; \
	fi

clean:
	rm -rf .venv $(BENCH_VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
