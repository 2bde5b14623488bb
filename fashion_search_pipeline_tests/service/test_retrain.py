"""A retrain through the running service: the answers switch from the previous model version to the new
one without ever mixing them; while the re-embedding has the tables hold both, a clear 503.

The model is published as domain_clip publishes it (models/<name>/versions/<version>/ and current/);
its tables are re-embedded by the embeddings asset, one modality partition at a time."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import open_clip
import pytest
import requests
import torch
import yaml
from dagster import MultiPartitionKey

from fashion_search_pipeline.columns import ITEM_ID, MODEL_VERSION, VECTOR
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.loading import open_clip_name
from fashion_search_pipeline.models.published import publish_model
from fashion_search_pipeline.models.registry import ARCHITECTURE_FILE, CHECKPOINT_FILE, ModelSpec, current_dir
from fashion_search_pipeline.search import READ_CONSISTENCY
from fashion_search_pipeline.store.tables import connect, table_name
from fashion_search_pipeline_tests.service.conftest import graph_runner, serve

MODEL = "retrained"
DROP = "retrain-001"
ITEMS = demo_items(variants=1)[::3]  # 14 products: two small tables
QUERY = ITEMS[4]  # text queries are this item's description: its own text vector, in the version that encodes
# Long enough for the service's table handles to see a commit, plus a slow answer on a crowded machine.
SEES_COMMITS_WITHIN_S = READ_CONSISTENCY.total_seconds() + 15
SCORE_TOLERANCE = 2e-3


def publish(home, seed: int) -> str:
    """A new version of MODEL with seeded random weights, published as domain_clip publishes; its version."""
    torch.manual_seed(seed)
    model = open_clip.create_model(open_clip_name(ModelSpec(MODEL, str(TINY_CONFIG), "unused.pt")), pretrained=None)
    return publish_model(MODEL, model, json.loads(TINY_CONFIG.read_text()), {"seed": seed}, home / "models").version


@pytest.fixture
def retrain_home(tmp_path):
    """A data folder whose registry loads MODEL from models/<MODEL>/current/, first version published and embedded."""
    write_drop(tmp_path / "landing" / "drops" / DROP, ITEMS)
    current = current_dir(MODEL, tmp_path / "models")
    spec = {"architecture": str(current / ARCHITECTURE_FILE), "pretrained": str(current / CHECKPOINT_FILE),
            "precision": "fp32"}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"include_defaults": False, "models": {MODEL: spec}}))
    return tmp_path


def table_vectors(home, modality: str) -> tuple[set[str], dict[str, np.ndarray]]:
    """The model versions of a table's rows and its vectors by item id."""
    rows = connect(str(home / "lancedb")).open_table(table_name(MODEL, modality)).to_arrow().to_pylist()
    return {row[MODEL_VERSION] for row in rows}, {row[ITEM_ID]: np.asarray(row[VECTOR]) for row in rows}


def text_query(url: str, fusion: str | None = "text") -> requests.Response:
    body = {"text": QUERY.description, "k": 10, **({"fusion": fusion} if fusion else {})}
    return requests.post(f"{url}/v1/search", json=body, timeout=60)


def assert_one_version(answer: dict, text_vectors: dict[str, dict[str, np.ndarray]]) -> None:
    """Every product's score is the cosine of the query and the product's text vector, both of the
    answer's version: the query's own item first at 1.0, and no row of another version."""
    vectors = text_vectors[answer["model_version"]]
    products = answer["products"]
    assert products[0]["item_id"] == QUERY.item_id
    for product in products:
        expected = float(vectors[QUERY.item_id] @ vectors[product["item_id"]])
        assert product["score"] == pytest.approx(expected, abs=SCORE_TOLERANCE), (answer["model_version"], product)


def answered(response: requests.Response, status: int) -> requests.Response | None:
    return response if response.status_code == status else None


def wait_for(condition, what: str):
    deadline = time.monotonic() + SEES_COMMITS_WITHIN_S
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.3)
    raise AssertionError(f"not within {SEES_COMMITS_WITHIN_S:.0f}s: {what}")


@pytest.mark.slow
def test_a_retrain_switches_the_service_to_the_new_version_without_ever_mixing_them(retrain_home, artifacts):
    home = retrain_home
    first = publish(home, seed=1)
    with graph_runner(home) as runner:
        runner.drops([DROP])
        assert runner.catalog(), runner.failures
        runner.embeddings([MODEL])
        assert runner.ok, runner.failures
        with serve(home, artifacts / "serve-retrain.log") as service:
            retrain_while_serving(home, runner, service.url, first)


def retrain_while_serving(home, runner, url: str, first: str) -> None:
    """Publish a second version and re-embed, one table at a time, while `url` answers searches."""
    versions, first_vectors = table_vectors(home, "text")
    assert versions == {first}
    answer = wait_for(lambda: answered(text_query(url), 200), "the first version's tables are searchable").json()
    assert answer["model_version"] == first
    assert_one_version(answer, {first: first_vectors})

    # Retrained: the registry loads the new version; the tables still hold the first, so queries
    # are encoded by the first version (from its published folder).
    second = publish(home, seed=2)
    assert second != first
    answer = text_query(url).json()
    assert answer["model_version"] == first
    assert_one_version(answer, {first: first_vectors})
    assert text_query(url, fusion=None).json()["model_version"] == first

    # The image table re-embedded, the text table not yet: the tables hold both versions.
    runner.run("embeddings image", ["embeddings"], _partition("image"))
    assert runner.ok, runner.failures
    busy = wait_for(lambda: answered(text_query(url, fusion=None), 503),
                    "a search answers 503 while the tables hold two versions")
    assert f"re-embedding to version {second} in progress" in busy.json()["detail"]
    assert busy.headers["retry-after"] == str(int(READ_CONSISTENCY.total_seconds()))
    for body in ({"text": QUERY.description, "fusion": "text"}, {"item_id": QUERY.item_id, "fusion": "text"},
                 {"item_id": QUERY.item_id, "fusion": "image"}):
        answer = requests.post(f"{url}/v1/search", json=body, timeout=60)
        assert answer.status_code == 503, (body, answer.text)
        assert f"re-embedding to version {second} in progress" in answer.json()["detail"]
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200

    # The text table re-embedded while a shopper keeps searching: each answer is of one version.
    answers: list[requests.Response] = []
    stop = threading.Event()

    def shopper() -> None:
        while not stop.is_set():
            answers.append(text_query(url, fusion="text" if len(answers) % 2 else None))

    thread = threading.Thread(target=shopper, daemon=True)
    thread.start()
    try:
        runner.run("embeddings text", ["embeddings"], _partition("text"))
        assert runner.ok, runner.failures
        wait_for(lambda: _of_version(answers[-1] if answers else None, second), "answers carry the new version")
    finally:
        stop.set()
        thread.join(timeout=60)
    versions, second_vectors = table_vectors(home, "text")
    assert versions == {second} and table_vectors(home, "image")[0] == {second}
    by_version = {first: first_vectors, second: second_vectors}
    # The check has power: the first version's query against the second version's rows scores far from 1.
    assert abs(float(first_vectors[QUERY.item_id] @ second_vectors[QUERY.item_id])) < 0.9
    for answer in answers:
        if answer.status_code == 503:
            assert f"re-embedding to version {second} in progress" in answer.json()["detail"]
            continue
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] in by_version
        if body["fusion"] == "text":
            assert_one_version(body, by_version)
    assert [a.json()["model_version"] for a in answers if a.status_code == 200][-1] == second

    answer = text_query(url).json()
    assert answer["model_version"] == second
    assert_one_version(answer, {second: second_vectors})
    weighted = text_query(url, fusion=None)
    assert weighted.status_code == 200 and weighted.json()["model_version"] == second
    like = requests.post(f"{url}/v1/search", json={"item_id": QUERY.item_id, "k": 3}, timeout=60)
    assert like.status_code == 200 and like.json()["model_version"] == second


def _of_version(response: requests.Response | None, version: str) -> requests.Response | None:
    if response is None or response.status_code != 200 or response.json()["model_version"] != version:
        return None
    return response


def _partition(modality: str) -> MultiPartitionKey:
    return MultiPartitionKey({"model": MODEL, "modality": modality})
