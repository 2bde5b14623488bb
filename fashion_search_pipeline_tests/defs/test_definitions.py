"""A snapshot of the code location (a lost edge, check or condition fails here), and the embeddings automation
evaluated on a real instance: unavailable models are never launched, a retrain requests only domain-clip."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    MultiPartitionKey,
    evaluate_automation_conditions,
    materialize,
)

from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.registry import (
    ARCHITECTURE_FILE,
    CHECKPOINT_FILE,
    DOMAIN_MODEL,
    ModelRegistryError,
    current_dir,
)
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL, make_defs

DEPS = {
    "raw_captions": [],
    "image_manifest": [],
    "catalog_deletions": [],
    "cleaned_captions": ["image_manifest", "raw_captions"],
    "catalog_items": ["catalog_deletions", "cleaned_captions"],
    "domain_clip": ["catalog_items"],
    "embeddings": ["catalog_items", "domain_clip"],
    "retrieval_evaluation": ["catalog_items", "embeddings"],
    "fusion_choices": ["retrieval_evaluation"],
    "product_clusters": ["catalog_items", "embeddings"],
    "product_tags": ["embeddings"],
}
PARTITIONS = {
    "raw_captions": "catalog_drops",
    "image_manifest": "catalog_drops",
    "catalog_deletions": "catalog_drops",
    "cleaned_captions": "catalog_drops",
    "embeddings": "modality x model",  # Dagster orders dimensions by name
}
AUTOMATION = {
    "catalog_items": "eager",
    "embeddings": "(catalog changed or domain_clip retrained) and model weights available",
    "retrieval_evaluation": "eager",
    "fusion_choices": "eager unless a blocking check upstream failed",
    "product_clusters": "after an embeddings run",
    "product_tags": "after an embeddings run",
}
CHECKS = {
    ("cleaned_captions", "drop_reject_rate"): False,
    ("catalog_items", "catalog_item_ids_unique"): True,
    ("embeddings", "tables_match_catalog"): True,
    ("embeddings", "index_coverage"): False,
    ("embeddings", "ann_index_recall"): False,
    ("embeddings", "models_available"): False,
    ("retrieval_evaluation", "metrics_not_regressed"): False,
    ("product_clusters", "caption_image_mismatch"): False,
}


def _partitions(node) -> str | None:
    definition = node.partitions_def
    if definition is None:
        return None
    if hasattr(definition, "partitions_defs"):
        return " x ".join(dimension.name for dimension in definition.partitions_defs)
    return definition.name


def test_the_definitions_snapshot(tmp_path, tiny_registry):
    defs = make_defs(tmp_path / "landing", tmp_path, tiny_registry)
    graph = defs.resolve_asset_graph()
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}

    assert {name: sorted(p.to_user_string() for p in node.parent_keys) for name, node in nodes.items()} == DEPS
    assert {name: _partitions(node) for name, node in nodes.items() if node.partitions_def} == PARTITIONS
    labels = {name: node.automation_condition.get_label() for name, node in nodes.items() if node.automation_condition}
    assert labels == AUTOMATION
    checks = {(key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    assert checks == CHECKS
    assert sorted(sensor.name for sensor in defs.sensors) == ["catalog_automation_sensor", "catalog_drop_sensor"]
    assert [schedule.name for schedule in defs.schedules] == ["nightly_catalog_refresh"]
    assert nodes["embeddings"].owners == ["team:search"]
    embeddings = graph.get(AssetKey("embeddings")).partitions_def
    assert embeddings.get_partition_keys() == [
        str(MultiPartitionKey({"model": TINY_MODEL, "modality": m})) for m in ("image", "text")
    ]


def test_no_description_loses_an_angle_bracketed_name(tmp_path, tiny_registry):
    """The UI renders descriptions as markdown: `<model>__<modality>` would be swallowed as an HTML tag."""
    defs = make_defs(tmp_path / "landing", tmp_path, tiny_registry)
    graph = defs.resolve_asset_graph()
    texts = [graph.get(key).description or "" for key in graph.get_all_asset_keys()]
    texts += [graph.get_check_spec(key).description or "" for key in graph.asset_check_keys]
    assert all(text.strip() for text in texts)
    assert not [text for text in texts if "<" in text.replace("`<", "")]


def _registry(tmp_path, home) -> str:
    """tiny (loadable), ghost (its checkpoint file is missing) and domain-clip (published under `home`)."""
    tiny = write_random_checkpoint(TINY_CONFIG, tmp_path / "tiny.pt", seed=0)
    domain = current_dir(DOMAIN_MODEL, home / "models")
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({
        "include_defaults": False,
        "models": {
            TINY_MODEL: {"architecture": str(TINY_CONFIG), "pretrained": str(tiny)},
            "ghost": {"architecture": str(TINY_CONFIG), "pretrained": str(tmp_path / "weights" / "ghost.pt")},
            DOMAIN_MODEL: {"architecture": str(domain / ARCHITECTURE_FILE), "pretrained": str(domain / CHECKPOINT_FILE)},
        },
    }))
    return str(path)


def _requested(result) -> set[tuple[str, str]]:
    """(model, modality) of the embeddings partitions a tick requested (keys read 'modality|model')."""
    return {tuple(reversed(key.split("|"))) for key in result.get_requested_partitions(AssetKey("embeddings"))}


def test_automation_skips_unavailable_models_backfills_them_later_and_follows_a_retrain(tmp_path, instance):
    home = tmp_path / "home"
    registry = _registry(tmp_path, home)
    write_drop(tmp_path / "landing" / "drops" / "d1", demo_items(variants=1)[:6])
    defs = make_defs(tmp_path / "landing", tmp_path, registry)
    runner = GraphRunner(defs, instance, log=lambda _: None)
    start = evaluate_automation_conditions(defs, instance)  # the automation sensor is on from the start
    runner.drops(["d1"])
    assert runner.catalog(), runner.failures

    # offline, domain-clip untrained, ghost's file missing: only tiny is launched, no run can fail
    first = evaluate_automation_conditions(defs, instance, cursor=start.cursor)
    assert _requested(first) == {(TINY_MODEL, "image"), (TINY_MODEL, "text")}
    again = evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert _requested(again) == set()

    # the weights appear: the next tick backfills exactly ghost's partitions
    (tmp_path / "weights").mkdir()
    write_random_checkpoint(TINY_CONFIG, tmp_path / "weights" / "ghost.pt", seed=3)
    backfill = evaluate_automation_conditions(defs, instance, cursor=again.cursor)
    assert _requested(backfill) == {("ghost", "image"), ("ghost", "text")}

    # domain_clip is published and materialized: exactly the domain-clip partitions follow
    domain = current_dir(DOMAIN_MODEL, home / "models")
    domain.mkdir(parents=True)
    shutil.copyfile(TINY_CONFIG, domain / ARCHITECTURE_FILE)
    write_random_checkpoint(TINY_CONFIG, domain / CHECKPOINT_FILE, seed=4)
    settled = evaluate_automation_conditions(defs, instance, cursor=backfill.cursor)
    assert _requested(settled) == {(DOMAIN_MODEL, "image"), (DOMAIN_MODEL, "text")}  # newly loadable: its backfill
    quiet = evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
    assert _requested(quiet) == set()
    instance.report_runless_asset_event(AssetMaterialization("domain_clip"))
    retrained = evaluate_automation_conditions(defs, instance, cursor=quiet.cursor)
    assert _requested(retrained) == {(DOMAIN_MODEL, "image"), (DOMAIN_MODEL, "text")}
    assert evaluate_automation_conditions(defs, instance, cursor=retrained.cursor).get_num_requested(AssetKey("embeddings")) == 0


def test_a_registry_file_that_becomes_invalid_names_the_file_and_line_on_reload(tmp_path, tiny_registry):
    registry = tmp_path / "models.yaml"
    registry.write_text(open(tiny_registry, encoding="utf-8").read())
    make_defs(tmp_path / "landing", tmp_path, str(registry))
    document = yaml.safe_load(registry.read_text())
    document["models"]["broken"] = {"architecture": str(TINY_CONFIG), "pretraind": "x.pt"}
    registry.write_text(yaml.safe_dump(document, sort_keys=False))
    problem = rf"{registry}, line \d+: model 'broken': unknown key\(s\) 'pretraind'"
    served = make_defs(tmp_path / "landing", tmp_path, str(registry)).resources["models"]  # the last good one
    assert re.match(problem + r" \(allowed: .*\); serving the last good registry from ", served.problem)
    assert set(served.specs()) == {TINY_MODEL}
    (tmp_path / "models.last-good.yaml").unlink()
    with pytest.raises(ModelRegistryError, match=problem):
        make_defs(tmp_path / "landing", tmp_path, str(registry))


def _check(defs, instance, name: str):
    """Run one embeddings check by itself (every partition) and return its evaluation."""
    result = materialize(
        [*defs.assets, *defs.asset_checks],
        instance=instance,
        resources=defs.resources,
        selection=AssetSelection.checks(AssetCheckKey(AssetKey("embeddings"), name)),
        raise_on_error=False,  # a failed blocking check fails its run
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.slow
def test_tables_match_catalog_fails_once_the_registry_resolves_another_version(tmp_path, instance):
    """After a registry edit (or a retrain) the tables hold the old version's vectors: an error until re-embedded."""
    registry = tmp_path / "models.yaml"
    weights = write_random_checkpoint(TINY_CONFIG, tmp_path / "v1.pt", seed=0)
    entry = {"architecture": str(TINY_CONFIG), "pretrained": str(weights)}
    registry.write_text(yaml.safe_dump({"include_defaults": False, "models": {TINY_MODEL: entry}}))
    write_drop(tmp_path / "landing" / "drops" / "d1", demo_items(variants=1)[:4])
    defs = make_defs(tmp_path / "landing", tmp_path, str(registry))
    runner = GraphRunner(defs, instance, log=lambda _: None)
    runner.drops(["d1"])
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    assert runner.ok, runner.failures
    assert _check(defs, instance, "tables_match_catalog").passed

    entry["pretrained"] = str(write_random_checkpoint(TINY_CONFIG, tmp_path / "v2.pt", seed=1))
    registry.write_text(yaml.safe_dump({"include_defaults": False, "models": {TINY_MODEL: entry}}))
    stale = _check(defs, instance, "tables_match_catalog")
    assert not stale.passed and stale.severity.value == "ERROR"
    assert stale.description == f"out of line with the catalog: {TINY_MODEL}__image, {TINY_MODEL}__text"
    assert f"| {TINY_MODEL}__text | 0 | 0 | 4 | 0 | mismatch |" in stale.metadata["tables"].value

    runner.embeddings([TINY_MODEL])
    assert runner.ok, runner.failures
    assert _check(defs, instance, "tables_match_catalog").passed
