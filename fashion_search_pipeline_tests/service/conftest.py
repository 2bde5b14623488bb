"""The search service as a user starts it (`fashion-search serve`) on a data folder the pipeline filled:
one drop materialized with a tiny random-weight model, uvicorn on a free 127.0.0.1 port."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from fashion_search_pipeline import config
from fashion_search_pipeline.demo_catalog import demo_items, render
from fashion_search_pipeline.service.settings import API_KEY_ENV, CORS_ORIGINS_ENV, MAX_UPLOAD_MB_ENV
from fashion_search_pipeline_tests.data_folder import LOCATION_VARIABLES, materialize_data_folder, write_tiny_registry

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
DROP_ID = "svc-001"
# `label` values that would change a query's meaning if spliced into SQL; each labels one item.
TRICKY_LABELS = ["it's", "' OR 1=1 --", "back\\slash", "50%", "Ünïcödé ✓ 红色", '"quoted"']
PLAIN_LABEL = "plain"
STARTUP_TIMEOUT_S = 120


def write_catalog_drop(folder: Path, items, labels: list[str], *, seed: int = 7) -> Path:
    """A drop like demo_catalog.write_drop's, with one more attribute column, `label`."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, delimiter="#", lineterminator="\n")
    writer.writerow(["item_id", "image_path", "description", "gender", "article_type", "colour", "label"])
    for item, label in zip(items, labels):
        path = f"images/{item.item_id}.jpg"
        render(item.article_type, item.colour, rng).save(folder / path, format="JPEG", quality=90)
        writer.writerow([item.item_id, path, item.description, item.gender, item.article_type, item.colour, label])
    (folder / "captions.csv").write_text(text.getvalue(), encoding="utf-8")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def service_home(tmp_path_factory) -> Path:
    """A data folder with drop svc-001 (the demo items, six of them with tricky labels) materialized for `tiny`."""
    home = tmp_path_factory.mktemp("service-home")
    items = demo_items(variants=1)
    labels = TRICKY_LABELS + [PLAIN_LABEL] * (len(items) - len(TRICKY_LABELS))
    write_catalog_drop(home / "landing" / "drops" / DROP_ID, items, labels)
    write_tiny_registry(home, MODEL)
    materialize_in(home, [DROP_ID])
    return home


def materialize_in(home: Path, drop_ids: list[str]) -> None:
    """Materialize `drop_ids` and MODEL's tables in data folder `home` (the environment restored after)."""
    saved = {name: os.environ.get(name) for name in (*LOCATION_VARIABLES, config.HOME_ENV)}
    for name in LOCATION_VARIABLES:
        os.environ.pop(name, None)
    os.environ[config.HOME_ENV] = str(home)
    try:
        materialize_data_folder(home, drop_ids, MODEL)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Service:
    """A running `fashion-search serve` process and its URL."""

    def __init__(self, home: Path, log: Path, extra_env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items() if key not in LOCATION_VARIABLES}
        env.update({config.HOME_ENV: str(home), **extra_env})
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fashion_search_pipeline.cli", "serve", "--port", str(self.port),
                 "--log-level", "warning"],
                cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the service was not ready within {STARTUP_TIMEOUT_S}s: {self.log.read_text()}")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where service logs and page screenshots go."""
    folder = Path(os.environ.get("FASHION_SEARCH_TEST_ARTIFACTS") or REPO / "test-artifacts") / "service"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _started(home: Path, log: Path, env: dict[str, str]):
    service = Service(home, log, env)
    try:
        service.wait_ready()
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture(scope="session")
def service(service_home, artifacts):
    """The service with default settings (no API key, no CORS, 10 MB uploads)."""
    running = _started(service_home, artifacts / "serve.log", {})
    yield running
    running.stop()


GUARDED_KEY = "s3cret-key-for-tests"
ALLOWED_ORIGIN = "http://shop.example"


@pytest.fixture(scope="session")
def guarded_service(service_home, artifacts):
    """The service with an API key, one CORS origin and a 1 MB upload limit, all from the environment."""
    env = {API_KEY_ENV: GUARDED_KEY, CORS_ORIGINS_ENV: ALLOWED_ORIGIN, MAX_UPLOAD_MB_ENV: "1"}
    running = _started(service_home, artifacts / "serve-guarded.log", env)
    yield running
    running.stop()
