"""Data folders (FASHION_SEARCH_HOME) like the one `make demo` fills, on generated drops and a tiny
random-weight model, for the tests that use the project as its users do (notebook, README, UI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test

from fashion_search_pipeline import config
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint

# Variables that would point the code away from the data folder under test.
LOCATION_VARIABLES = (config.LANDING_ENV, config.DB_ENV, config.MODELS_ENV, config.ASSETS_ENV, config.S3_ENDPOINT_ENV)


def write_tiny_registry(home: Path, model: str) -> Path:
    """<home>/models.yaml registering only `model`: the tiny architecture with seeded random weights."""
    checkpoint = write_random_checkpoint(TINY_CONFIG, home / "models" / "tiny.pt", seed=0)
    registry = home / "models.yaml"
    spec = {"architecture": str(TINY_CONFIG), "pretrained": str(checkpoint)}
    registry.write_text(yaml.safe_dump({"include_defaults": False, "models": {model: spec}}))
    return registry


def use_data_folder(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point FASHION_SEARCH_HOME at `home`, with every location defaulting to it."""
    for variable in LOCATION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(config.HOME_ENV, str(home))


def materialize_data_folder(home: Path, drop_ids: list[str], model: str, *, evaluate: bool = False) -> None:
    """Materialize the drops under <home>/landing, the catalog and `model`'s tables (and retrieval_evaluation)."""
    defs = build_definitions(config.Settings.from_env({}, home=home))
    with instance_for_test() as instance:
        runner = materialize_graph(defs, instance, drop_ids, [model], log=lambda _: None, console_log_level="ERROR")
        if evaluate:
            runner.run("retrieval_evaluation", ["retrieval_evaluation"])
    assert runner.ok, runner.failures
