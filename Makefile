# The two commands a new user runs: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FASHION_SEARCH_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(FASHION_SEARCH_HOME)/dagster

.PHONY: install browser demo test dagster dagster-home bench eval clean

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

test: install browser
	$(BIN)/python -m pytest

eval: install
	$(BIN)/fashion-search evaluate --home $(FASHION_SEARCH_HOME)/eval

bench: install
	$(BIN)/python -m benchmarks

dagster: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data test-artifacts
