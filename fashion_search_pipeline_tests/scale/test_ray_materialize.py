"""The embeddings asset with engine `ray`, as a user runs it: `fashion-search materialize` with RAY_ADDRESS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pytest
from dagster import instance_for_test

from fashion_search_pipeline import config
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.defs.resources import ENGINE_ENV, EmbeddingEngine
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.data_folder import LOCATION_VARIABLES
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL

pytestmark = pytest.mark.ray

DROP = "gen-001"


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    write_drop(root / "drops" / DROP, demo_items(variants=1)[:30])
    return root


def cli(home: Path, landing: Path, registry: str, ray_address: str) -> subprocess.CompletedProcess:
    """`fashion-search materialize` in a fresh process, engine ray at `ray_address`."""
    env = {key: value for key, value in os.environ.items() if key not in LOCATION_VARIABLES}
    env.update({
        config.HOME_ENV: str(home),
        config.LANDING_ENV: str(landing),
        config.MODELS_ENV: registry,
        ENGINE_ENV: "ray",
        "RAY_ADDRESS": ray_address,
    })
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "fashion_search_pipeline.cli", "materialize", "--model", TINY_MODEL]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def vectors(db_uri: str, modality: str) -> dict[str, np.ndarray]:
    rows = lancedb.connect(db_uri).open_table(f"{TINY_MODEL}__{modality}").to_arrow().to_pylist()
    assert len(rows) == len({row["item_id"] for row in rows})
    return {row["item_id"]: np.asarray(row["vector"]) for row in rows}


def test_cli_on_ray_address_gives_the_same_tables_as_local(ray_cluster, tmp_path, landing, tiny_registry):
    address = ray_cluster.get_runtime_context().gcs_address
    home = tmp_path / "ray-home"
    run = cli(home, landing, tiny_registry, address)
    assert run.returncode == 0, run.stdout + run.stderr

    local = config.Settings.from_env({}, home=tmp_path, landing=str(landing), db=str(tmp_path / "local-db"),
                                     models_file=tiny_registry)
    defs = build_definitions(local, engine=EmbeddingEngine())
    with instance_for_test() as instance:
        assert materialize_graph(defs, instance, [DROP], [TINY_MODEL], log=lambda _: None).ok
    for modality in ("image", "text"):
        on_ray, locally = vectors(str(home / "lancedb"), modality), vectors(local.db, modality)
        assert set(on_ray) == set(locally) and len(on_ray) == 30
        assert min(float(on_ray[item] @ locally[item]) for item in locally) >= 0.9999


def test_unreachable_ray_address_fails_the_step_naming_it_and_writes_nothing(tmp_path, landing, tiny_registry):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    home = tmp_path / "home"

    run = cli(home, landing, tiny_registry, address)

    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert f"cannot reach the Ray cluster at {address}" in output
    assert "FAILED: embeddings tiny|image" in output
    db = lancedb.connect(str(home / "lancedb"))
    assert not [name for name in db.list_tables().tables if name.startswith(f"{TINY_MODEL}__")]
