# The two commands a new user runs: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FASHION_SEARCH_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(FASHION_SEARCH_HOME)/dagster

.PHONY: install demo test dagster dagster-home bench eval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install dagster-home
	$(BIN)/fashion-search demo

test: install
	$(BIN)/python -m pytest

eval: install
	$(BIN)/fashion-search evaluate --home $(FASHION_SEARCH_HOME)/eval

dagster: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data test-artifacts
