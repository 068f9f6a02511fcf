# Open-AutoGLM developer commands. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build; a bare `torch` pulls a multi-GB CUDA build. On a GPU machine, override:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0

.PHONY: setup demo test up protos vendor lint lint-protos typecheck clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# `npm install --no-save` rather than `npm ci`: the lock pins versions, but npm 11 records only
# this platform's optional buf binary in it, and `npm ci` then refuses the lock as out of sync.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/openautoglm demo

up: setup
	$(VENV)/bin/openautoglm up

test: setup lint lint-protos typecheck
	$(PY) -m pytest -q --durations=30

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check services gateway tests benchmarks scripts

# mypy over both source roots (config in pyproject.toml: strict on the gRPC-free cores).
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

protos: $(VENV)/.installed
	$(PY) scripts/gen_protos.py

# The dashboard's chart library, copied from node_modules into the gateway package (checked in).
vendor: node_modules/.installed
	$(PY) scripts/vendor_dashboard.py

lint-protos: node_modules/.installed
	npx --no-install buf lint protos

clean:
	rm -rf $(VENV) node_modules
