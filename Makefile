# The README's two commands are `make demo` and `make test`; CI runs `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: setup demo up test test-quick proto bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: setup  ## both services with embedded defaults, one image through plan -> execute
	$(VENV)/bin/imagegen demo

up: setup  ## both services in the foreground on 127.0.0.1:50051 and :50052
	$(VENV)/bin/imagegen up

test: setup  ## everything: contract checks, unit, integration
	$(PY) -m pytest

test-quick: setup  ## domain and unit tests only
	$(PY) -m pytest -m "not slow and not integration"

proto: setup  ## regenerate imagegen/v1 from protos/
	$(PY) scripts/gen_protos.py

bench: setup  ## the benchmarks in bench/; figures go to docs/performance.md
	$(PY) -m bench
