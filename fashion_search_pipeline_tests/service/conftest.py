"""The search service as a user starts it (`fashion-search serve`) on a data folder the pipeline filled:
one drop materialized with a tiny random-weight model, uvicorn on a free 127.0.0.1 port."""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from dagster import instance_for_test

from benchmarks.service_load import ServiceProcess
from fashion_search_pipeline import config
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.demo_catalog import demo_items, render, write_drop
from fashion_search_pipeline.service.settings import API_KEY_ENV, CORS_ORIGINS_ENV, MAX_UPLOAD_MB_ENV
from fashion_search_pipeline_tests.data_folder import LOCATION_VARIABLES, materialize_data_folder, write_tiny_registry

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
DROP_ID = "svc-001"
# `label` values that would change a query's meaning if spliced into SQL; each labels one item.
TRICKY_LABELS = ["it's", "' OR 1=1 --", "back\\slash", "50%", "Ünïcödé ✓ 红色", '"quoted"']
PLAIN_LABEL = "plain"
STARTUP_TIMEOUT_S = 120
VARIANTS_DROP_ID = "svc-variants"
# Items of the variants home that are uploaded again under other ids, with the same photo.
REUPLOADS = {"dress-red-1": ["dress-red-1-b", "dress-red-1-c"], "shoes-blue-1": ["shoes-blue-1-b"]}
CLUSTERS = {original: {original, *copies} for original, copies in REUPLOADS.items()}
VARIANTS_PRODUCTS = len(demo_items(variants=1)) + sum(len(copies) for copies in REUPLOADS.values())
CATALOG_ATTRIBUTES = ("gender", "article_type", "colour")
# The variants home's zero-shot facets. Random weights tag every item alike with the shipped labels;
# `look`'s two labels split the demo items between them (32 and 10) under the tiny model of seed 0.
TEST_FACETS = """
facets:
  - {name: pattern, prompt: "a product photo of a {label} garment", labels: [striped, solid colour, floral]}
  - {name: sleeve, prompt: "a product photo of a {label} top", labels: [long sleeve, short sleeve, sleeveless]}
  - {name: look, prompt: "a product photo of a {label} item", labels: [heavy, casual]}
"""


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


@contextmanager
def data_folder_environment(home: Path) -> Iterator[None]:
    """FASHION_SEARCH_HOME set to `home` and the other location variables unset, restored after."""
    saved = {name: os.environ.get(name) for name in (*LOCATION_VARIABLES, config.HOME_ENV)}
    for name in LOCATION_VARIABLES:
        os.environ.pop(name, None)
    os.environ[config.HOME_ENV] = str(home)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def materialize_in(home: Path, drop_ids: list[str]) -> None:
    """Materialize `drop_ids` and MODEL's tables in data folder `home` (the environment restored after)."""
    with data_folder_environment(home):
        materialize_data_folder(home, drop_ids, MODEL)


@contextmanager
def graph_runner(home: Path) -> Iterator[GraphRunner]:
    """A GraphRunner for data folder `home`'s code location on one temporary Dagster instance."""
    with data_folder_environment(home), instance_for_test() as instance:
        defs = build_definitions(config.Settings.from_env({}, home=home))
        yield GraphRunner(defs, instance, log=lambda _: None, console_log_level="ERROR")


@pytest.fixture(scope="session")
def variants_home(tmp_path_factory) -> Path:
    """A data folder like the demo's after every enrichment: the demo items plus re-uploads of two of
    them (the very same photo: one variant cluster each), product_clusters and product_tags materialized."""
    home = tmp_path_factory.mktemp("variants-home")
    folder = write_drop(home / "landing" / "drops" / VARIANTS_DROP_ID, demo_items(variants=1), marker=False)
    with open(folder / "captions.csv", "a", encoding="utf-8", newline="") as captions:
        writer = csv.writer(captions, delimiter="#", lineterminator="\n")
        for original, copies in REUPLOADS.items():
            item = next(item for item in demo_items(variants=1) if item.item_id == original)
            for copy in copies:
                shutil.copyfile(folder / "images" / f"{original}.jpg", folder / "images" / f"{copy}.jpg")
                writer.writerow([copy, f"images/{copy}.jpg", f"{item.description} Re-upload", item.gender,
                                 item.article_type, item.colour])
    (folder / "_SUCCESS").write_bytes(b"")
    write_tiny_registry(home, MODEL)
    facets = home / "facets.yaml"
    facets.write_text(TEST_FACETS, encoding="utf-8")
    with graph_runner(home) as runner:
        runner.drops([VARIANTS_DROP_ID])
        assert runner.catalog(), runner.failures
        runner.embeddings([MODEL])
        # Threshold 1: only items with the same photo are variants (random weights put unrelated photos close).
        runner.run("product_clusters", ["product_clusters"],
                   config={"product_clusters": {"config": {"variant_threshold": 1.0}}})
        runner.run("product_tags", ["product_tags"], config={"product_tags": {"config": {"facets_file": str(facets)}}})
        assert runner.ok, runner.failures
    return home


def tag_facets(url: str) -> dict[str, list[dict]]:
    """The service's zero-shot facets (product_tags columns, not catalog attributes) with two values or more."""
    facets = requests.get(f"{url}/v1/facets", timeout=10).json()["facets"]
    return {name: values for name, values in facets.items() if name not in CATALOG_ATTRIBUTES and len(values) > 1}


def service_environment(home: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """This process's environment pointed at data folder `home` only, plus `extra_env`."""
    env = {key: value for key, value in os.environ.items() if key not in LOCATION_VARIABLES}
    return {**env, config.HOME_ENV: str(home), **extra_env}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where service logs and page screenshots go."""
    folder = Path(os.environ.get("FASHION_SEARCH_TEST_ARTIFACTS") or REPO / "test-artifacts") / "service"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def serve(home: Path, log: Path, env: dict[str, str] | None = None) -> ServiceProcess:
    """`fashion-search serve` over data folder `home`, started (`with` waits until it is ready, then stops it)."""
    return ServiceProcess(log, env=service_environment(home, env or {}), startup_timeout_s=STARTUP_TIMEOUT_S)


@pytest.fixture(scope="session")
def service(service_home, artifacts):
    """The service with default settings (no API key, no CORS, 10 MB uploads)."""
    with serve(service_home, artifacts / "serve.log") as running:
        yield running


GUARDED_KEY = "s3cret-key-for-tests"
ALLOWED_ORIGIN = "http://shop.example"


@pytest.fixture(scope="session")
def guarded_service(service_home, artifacts):
    """The service with an API key, one CORS origin and a 1 MB upload limit, all from the environment."""
    env = {API_KEY_ENV: GUARDED_KEY, CORS_ORIGINS_ENV: ALLOWED_ORIGIN, MAX_UPLOAD_MB_ENV: "1"}
    with serve(service_home, artifacts / "serve-guarded.log", env) as running:
        yield running


@pytest.fixture(scope="session")
def variants_service(variants_home, artifacts):
    """The service over the variants home (default settings)."""
    with serve(variants_home, artifacts / "serve-variants.log") as running:
        yield running
