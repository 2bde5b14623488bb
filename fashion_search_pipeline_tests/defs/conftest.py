"""Fixtures for tests that materialize the asset graph: a landing folder, a model registry, storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test

from fashion_search_pipeline.config import Settings
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.defs.resources import CatalogStorage
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint

TINY_MODEL = "tiny"


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory) -> str:
    """A registry file with only a tiny random-weight model, loaded from its checkpoint file."""
    folder = tmp_path_factory.mktemp("registry")
    checkpoint = write_random_checkpoint(TINY_CONFIG, folder / "tiny.pt", seed=0)
    registry = folder / "models.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "include_defaults": False,
                "models": {TINY_MODEL: {"architecture": str(TINY_CONFIG), "pretrained": str(checkpoint), "batch_size": 16}},
            }
        )
    )
    return str(registry)


@pytest.fixture
def instance():
    """A temporary Dagster instance (sqlite in a temp folder)."""
    with instance_for_test() as instance:
        yield instance


def make_defs(landing: Path | str, tmp_path: Path, registry: str, storage: CatalogStorage | None = None):
    """Definitions over `landing`, with asset values (and, unless `storage` says otherwise, LanceDB) under tmp_path."""
    settings = Settings.from_env({}, home=tmp_path, landing=str(landing), models_file=registry)
    return build_definitions(settings, storage=storage)
