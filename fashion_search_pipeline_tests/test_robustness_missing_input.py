"""Probe: one drop's cleaned_captions file is lost from the asset store.

Before: the IO manager skipped the partition, catalog_items halved, and the embedding step
deleted that drop's rows from every table, exit 0. Now the catalog run fails naming asset,
partition and path, and the embedding step refuses to remove a large share of a table unless
the catalog's deletion records explain it or the run is forced.
"""

from __future__ import annotations

import lancedb
from dagster import DagsterEventType, MultiPartitionKey

from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.defs import conftest as graph

instance = graph.instance  # the graph tests' fixture
tiny_registry = graph.tiny_registry  # the graph tests' fixture
TINY_MODEL = graph.TINY_MODEL
make_defs = graph.make_defs


def _failure_message(instance, runner: GraphRunner) -> str:
    run_id = runner.failures[-1].rsplit("(run ", 1)[1].rstrip(")")
    messages = []
    for event in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        error = event.dagster_event.step_failure_data.error
        while error is not None:  # the IO manager's error is the cause of Dagster's load-input error
            messages.append(error.message)
            error = error.cause
    return " ".join(messages)


def _rows(tmp_path, modality="image") -> int:
    return lancedb.connect(str(tmp_path / "lancedb")).open_table(f"{TINY_MODEL}__{modality}").count_rows()


def test_a_lost_partition_file_fails_the_catalog_and_no_rows_are_deleted(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    items = demo_items(variants=1)
    half = len(items) // 2
    write_drop(landing / "drops" / "d1", items[:half])
    write_drop(landing / "drops" / "d2", items[half:], seed=8)
    runner = GraphRunner(make_defs(landing, tmp_path, tiny_registry), instance, log=lambda _: None)
    runner.drops(["d1", "d2"])
    assert runner.ok, _failure_message(instance, runner)
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    assert runner.ok, runner.failures
    assert _rows(tmp_path) == len(items)

    lost = tmp_path / "assets" / "cleaned_captions" / "d1.parquet"
    lost.unlink()
    assert not runner.catalog()
    message = _failure_message(instance, runner)
    assert "cleaned_captions" in message and "'d1'" in message and str(lost) in message

    # The embeddings step reads the catalog_items value stored before: the table keeps every row.
    runner.embeddings([TINY_MODEL])
    assert _rows(tmp_path) == len(items) and _rows(tmp_path, "text") == len(items)


def test_the_embedding_step_withholds_unexplained_mass_removals_unless_forced(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    items = demo_items(variants=1)
    write_drop(landing / "drops" / "d1", items)
    defs = make_defs(landing, tmp_path, tiny_registry)
    runner = GraphRunner(defs, instance, log=lambda _: None)
    runner.drops(["d1"])
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    # The drop now holds a third of its items, with no deletions.csv: the catalog shrinks unexplained.
    kept = items[: len(items) // 3]
    (landing / "drops" / "d1" / "captions.csv").unlink()
    write_drop(landing / "drops" / "d1", kept)
    runner.drops(["d1"])
    assert runner.catalog()
    key = MultiPartitionKey({"model": TINY_MODEL, "modality": "image"})
    result = runner.run("embeddings", ["embeddings"], key)
    [materialization] = result.asset_materializations_for_node("embeddings")
    withheld = materialization.metadata["removal_withheld"].value
    assert materialization.metadata["removed"].value == 0 and "no deletion record" in withheld and "force" in withheld
    assert _rows(tmp_path) == len(items)

    forced = runner.run("embeddings", ["embeddings"], key, config={"embeddings": {"config": {"force_removals": True}}})
    assert forced.success
    assert _rows(tmp_path) == len(kept)


def test_items_the_catalog_records_as_deleted_are_removed_however_many(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    items = demo_items(variants=1)
    write_drop(landing / "drops" / "d1", items)
    runner = GraphRunner(make_defs(landing, tmp_path, tiny_registry), instance, log=lambda _: None)
    runner.drops(["d1"])
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    doomed = [item.item_id for item in items[: len(items) // 2]]
    folder = landing / "drops" / "d2"
    folder.mkdir(parents=True)
    (folder / "captions.csv").write_text("item_id#image_path#description\n")
    (folder / "deletions.csv").write_text("item_id\n" + "\n".join(doomed) + "\n")
    (folder / "_SUCCESS").write_text("")
    runner.drops(["d2"])
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    assert runner.ok, runner.failures
    assert _rows(tmp_path) == len(items) - len(doomed)
