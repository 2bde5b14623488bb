"""The search service on Ray Serve: `fashion-search serve --ray` on the local cluster, queried over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fashion_search_pipeline import config
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.scale.ray_serve import APP_NAME, DEPLOYMENT_NAME, ServeScaling, build_app
from fashion_search_pipeline_tests.data_folder import (
    LOCATION_VARIABLES,
    materialize_data_folder,
    use_data_folder,
    write_tiny_registry,
)
from fashion_search_pipeline_tests.scale.conftest import _free_port

MODEL = "tiny"
DEPLOY_SERVE = Path(__file__).resolve().parents[2] / "deploy" / "serve.yaml"
READY_WAIT_S = 300


@pytest.fixture
def served_home(tmp_path, monkeypatch) -> Path:
    """A data folder with one drop materialized for the tiny model (local engine)."""
    home = tmp_path / "home"
    write_drop(home / "landing" / "drops" / "svc-001", demo_items(variants=1))
    write_tiny_registry(home, MODEL)
    use_data_folder(monkeypatch, home)
    materialize_data_folder(home, ["svc-001"], MODEL)
    return home


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {}


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_ready(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if get(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass  # the proxy or the replica is not up yet
        time.sleep(1)
    pytest.fail(f"Ray Serve did not answer /readyz within {READY_WAIT_S}s")


@pytest.mark.ray
def test_serve_ray_answers_searches_over_http_and_stops_cleanly(ray_cluster, served_home, tmp_path):
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in LOCATION_VARIABLES}
    env[config.HOME_ENV] = str(served_home)
    command = [sys.executable, "-m", "fashion_search_pipeline.cli", "serve", "--ray", "--host", "127.0.0.1",
               "--port", str(port), "--ray-address", ray_cluster.get_runtime_context().gcs_address,
               "--max-replicas", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        target = demo_items(variants=1)[5]
        queries = [{"text": item.description, "k": 3} for item in demo_items(variants=1)[:8]]
        with ThreadPoolExecutor(8) as pool:  # concurrent queries: the replica's encoder batches them
            answers = list(pool.map(lambda body: post(f"{base}/v1/search", body), queries))
        assert [status for status, _ in answers] == [200] * 8
        status, answer = post(f"{base}/v1/search", {"text": target.description, "k": 3, "fusion": "text"})
        assert status == 200 and answer["model"] == MODEL and len(answer["products"]) == 3
        assert answer["products"][0]["item_id"] == target.item_id
        assert post(f"{base}/v1/search", {"text": "x", "k": 10_000})[0] == 422  # the service's own limits
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    from ray import serve

    assert APP_NAME not in serve.status().applications


def test_the_serve_config_file_builds_the_autoscaled_application():
    document = yaml.safe_load(DEPLOY_SERVE.read_text())
    [application] = document["applications"]
    module, _, attribute = application["import_path"].partition(":")
    assert (module, attribute) == ("fashion_search_pipeline.scale.ray_serve", "build_app")

    app = build_app({**application["args"], "db_uri": "/tmp/unused-lancedb"})

    deployment = app._bound_deployment
    assert deployment.name == DEPLOYMENT_NAME
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 4)
    assert autoscaling.target_ongoing_requests == application["args"]["target_ongoing_requests"]
    with pytest.raises(ValueError, match="unknown Serve args"):
        ServeScaling.from_args({"max_replica": 3})
