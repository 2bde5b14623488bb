# The two commands a new user runs: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FASHION_SEARCH_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(FASHION_SEARCH_HOME)/dagster

.PHONY: install browser demo test test-fast test-ray dagster dagster-home bench eval serve clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# Debian's Chromium for the Dagster UI browser test (fashion_search_pipeline_tests/ui); needs root.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

demo: install dagster-home
	$(BIN)/fashion-search demo

# Everything but the Ray tests, then the Ray tests (see test-ray).
test: install browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not ray"
	$(MAKE) test-ray

# What a developer runs often (under 2 minutes on a quiet machine): every pure module and one small
# graph materialization; no browser, training, subprocess CLI, Ray or PostgreSQL (docs/developing.md).
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The Ray tests, inside a private network namespace with loopback only (`unshare -n`, root):
# outside one, Ray dials the machine's external address. Where no namespace can be made they skip.
test-ray: install
	@if unshare -n true 2>/dev/null; then \
		unshare -n sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -m ray fashion_search_pipeline_tests/scale'; \
	else \
		$(BIN)/python -m pytest -m ray fashion_search_pipeline_tests/scale; \
	fi

eval: install
	$(BIN)/fashion-search evaluate --home $(FASHION_SEARCH_HOME)/eval

bench: install
	$(BIN)/python -m benchmarks

dagster: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The search API and page over ./data's tables: http://127.0.0.1:8080 (API reference at /docs).
serve: install
	$(BIN)/fashion-search serve --host 127.0.0.1 --port 8080

clean:
	rm -rf data test-artifacts
