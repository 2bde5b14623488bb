"""The domain_clip asset: trains on the catalog, publishes a version, and its embeddings follow new versions."""

from __future__ import annotations

import lancedb
import pytest
import yaml
from dagster import DagsterEventType

from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.published import read_card
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, domain_model_spec, load_registry
from fashion_search_pipeline_tests.defs.conftest import make_defs

QUICK = {"epochs": 2, "batch_size": 32, "max_train_seconds": 30.0, "holdout_fraction": 0.2}


@pytest.fixture
def runner(tmp_path, instance):
    spec = domain_model_spec(tmp_path / "models")  # make_defs' data folder is tmp_path
    registry = tmp_path / "models.yaml"
    registry.write_text(
        yaml.safe_dump(
            {"include_defaults": False, "models": {DOMAIN_MODEL: {"architecture": spec.architecture, "pretrained": spec.pretrained}}}
        )
    )
    write_drop(tmp_path / "landing" / "drops" / "d1", demo_items(variants=1))
    runner = GraphRunner(make_defs(tmp_path / "landing", tmp_path, str(registry)), instance, log=lambda _: None)
    runner.drops(["d1"])
    assert runner.catalog()
    return runner


def _table_versions(tmp_path, modality: str) -> set[str]:
    table = lancedb.connect(str(tmp_path / "lancedb")).open_table(f"{DOMAIN_MODEL}__{modality}")
    return set(table.to_arrow().column("model_version").to_pylist())


def test_trained_version_is_registered_and_embeddings_follow_a_retrained_version(runner, tmp_path):
    assert runner.domain_clip(QUICK)
    card = read_card(DOMAIN_MODEL, tmp_path / "models")
    assert card["items"]["train"] + card["items"]["held_out"] == len(demo_items(variants=1))
    assert 0 < card["held_out"]["random_mrr"] < 1 and card["held_out"]["text_to_image_mrr"] > 0
    assert card["hyperparameters"]["batch_size"] == 32
    first = card["version"]
    assert load_clip(load_registry(runner.defs.resources["models"].models_file)[DOMAIN_MODEL]).version == first

    runner.embeddings([DOMAIN_MODEL])
    assert runner.ok, runner.failures
    assert _table_versions(tmp_path, "text") == {first}

    assert runner.domain_clip({**QUICK, "seed": 1, "force": True})
    second = read_card(DOMAIN_MODEL, tmp_path / "models")["version"]
    assert second != first
    runner.embeddings([DOMAIN_MODEL])
    assert runner.ok, runner.failures
    for modality in ("image", "text"):
        assert _table_versions(tmp_path, modality) == {second}, "rows of the old version were replaced, not mixed"


def test_a_failed_training_run_leaves_the_previous_version_registered(runner, tmp_path):
    assert runner.domain_clip(QUICK)
    before = read_card(DOMAIN_MODEL, tmp_path / "models")["version"]

    assert not runner.domain_clip({**QUICK, "freeze": "both towers"})

    assert read_card(DOMAIN_MODEL, tmp_path / "models")["version"] == before
    assert load_clip(domain_model_spec(tmp_path / "models")).version == before



def _failure_messages(instance, run_failure: str) -> str:
    run_id = run_failure.rsplit("(run ", 1)[1].rstrip(")")
    events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return " ".join(event.dagster_event.step_failure_data.error.message for event in events)


def test_a_worse_retrain_is_not_published_unless_forced(runner, instance, tmp_path):
    assert runner.domain_clip(QUICK)
    registered = read_card(DOMAIN_MODEL, tmp_path / "models")["version"]
    # A negative margin demands a better held-out MRR than the registered version's by 1.0: impossible.
    assert not runner.domain_clip({**QUICK, "seed": 1, "publish_margin": -1.0})
    assert read_card(DOMAIN_MODEL, tmp_path / "models")["version"] == registered
    assert load_clip(domain_model_spec(tmp_path / "models")).version == registered
    message = _failure_messages(instance, runner.failures[-1])
    assert "not published" in message and f"registered version {registered}" in message and "force" in message

    assert runner.domain_clip({**QUICK, "seed": 1, "publish_margin": -1.0, "force": True})
    assert read_card(DOMAIN_MODEL, tmp_path / "models")["version"] != registered
