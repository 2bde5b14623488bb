"""Fixtures shared by every test package (one per real part), and the markers each test gets.

Markers (registered in pyproject.toml, `--strict-markers`) are given here from what a test uses, so
a new test is marked by the fixtures it asks for: `s3` (moto's server), `postgres`, `ui` (a real
browser), `ray`, and `slow` for anything that materializes the asset graph, trains, runs a
subprocess CLI, drives a browser or starts a server. `make test-fast` runs `-m "not slow"`: every
pure module plus the one small graph materialization named in FAST_MATERIALIZATION.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec

TESTS = Path(__file__).resolve().parent

# Fixtures whose setup makes a test slow, and why.
SLOW_FIXTURES = {
    "instance": "materializes the asset graph on a temporary Dagster instance",
    "graph": "materializes the asset graph (module fixture)",
    "s3_world": "materializes the asset graph on S3",
    "runner": "trains domain-clip through the graph",
    "service_home": "materializes a catalog and starts the search service on uvicorn",
    "served_home": "materializes a catalog for Ray Serve",
    "postgres": "starts PostgreSQL",
    "ray_cluster": "starts a Ray cluster",
    "dagster_ui": "starts the Dagster webserver",
    "page": "drives Chromium",
    "browser_page": "drives Chromium",
}
# Tests (file, or file::name) that are slow by what their body does rather than by a fixture.
SLOW_TESTS = {
    "test_cli_demo.py": "the whole demo: training, materializations, CLI",
    "test_notebooks.py": "executes the notebook in a kernel, materializing the graph",
    "test_docs_snippets.py": "materializes the graph as the docs show",
    "test_robustness_kill.py": "kills a materialization running in a subprocess",
    "test_robustness_instance.py": "concurrent CLI runs in subprocesses",
    "test_robustness_storage_errors.py::test_the_cli_reports_an_unreadable_landing_in_one_line": "a subprocess CLI run",
    "test_search.py::test_tables_of_a_version_whose_checkpoint_is_gone_get_a_clear_error": "materializes the graph",
    "test_search.py::test_a_search_encodes_with_the_version_its_tables_hold_through_a_retrain": "embeds twice",
    "test_robustness_storage_errors.py::test_a_wrong_endpoint_names_the_uri_and_the_drop": "waits out S3 retries",
    "test_cli_errors.py": "CLI commands over a data folder the module materializes",
    "test_settings.py::test_materialization_on_s3_with_a_session_token_keeps_secrets_out_of_dagster": "on S3",
    "defs/test_evaluation_asset.py": "materializes the graph and runs the evaluate command",
    "scale/test_postgres_instance.py": "drop runs on PostgreSQL",
}
UI_PATHS = ("ui/", "service/test_page.py")
POSTGRES_PATHS = ("scale/test_postgres_instance.py",)
# The one small graph materialization the fast subset keeps: a generated drop, the tiny model.
FAST_MATERIALIZATION = "defs/test_graph.py::test_generated_drop_rejects_bad_rows_and_embeds_the_good_ones"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the real parts it uses (see the module docstring)."""
    for item in items:
        path = Path(item.path).resolve().relative_to(TESTS).as_posix()
        test_id = f"{path}::{item.originalname}"
        fixtures = set(item.fixturenames)
        if "s3_endpoint" in fixtures:
            item.add_marker(pytest.mark.s3)
        if "postgres" in fixtures or path.startswith(POSTGRES_PATHS):
            item.add_marker(pytest.mark.postgres)
        if path.startswith(UI_PATHS):
            item.add_marker(pytest.mark.ui)
        if test_id == FAST_MATERIALIZATION:
            continue
        slow = (
            fixtures & SLOW_FIXTURES.keys()
            or path in SLOW_TESTS
            or test_id in SLOW_TESTS
            or any(item.get_closest_marker(name) for name in ("ui", "ray", "postgres"))
        )
        if slow:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint (moto's server) on 127.0.0.1 at a free port.

    Yields {endpoint_url, region, key, secret}. The server keeps its state for
    the whole session: give every test its own bucket.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {
            "endpoint_url": f"http://{host}:{port}",
            "region": "us-east-1",
            "key": "testing",
            "secret": "testing",
        }
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    """A boto3 S3 client on the moto server (for making buckets and objects in tests)."""
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Random weights (seed 0) of the tiny test architecture (TINY_CONFIG), in a checkpoint file."""
    return write_random_checkpoint(TINY_CONFIG, tmp_path_factory.mktemp("tiny-model") / "fsp-tiny.pt", seed=0)


@pytest.fixture(scope="session")
def tiny_model_spec(tiny_checkpoint) -> ModelSpec:
    """A ModelSpec for the tiny test architecture loading `tiny_checkpoint`, fp32 on CPU."""
    return ModelSpec("fsp-tiny", str(TINY_CONFIG), pretrained=str(tiny_checkpoint), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_loaded_clip(tiny_model_spec) -> LoadedClip:
    """The tiny model loaded through load_clip (fp32 on CPU)."""
    return load_clip(tiny_model_spec)
