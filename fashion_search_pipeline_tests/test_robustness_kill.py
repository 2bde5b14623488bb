"""Probe: `fashion-search materialize` killed with SIGKILL during the embeddings step, then run again.

Before: the dead run kept its `embedding` pool slot and the re-run hung silently for 13+ minutes.
Now the re-run frees the slot (the dead run's process is gone), completes, and leaves each item
once, embedding only what the killed run had not committed: its own materialization metadata says
it embedded (catalog - committed) items and skipped the committed ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import polars as pl
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, MultiPartitionKey, RunsFilter

from fashion_search_pipeline.dagster_home import open_instance
from fashion_search_pipeline.demo_catalog import write_demo_landing
from fashion_search_pipeline_tests.defs import conftest as graph

tiny_registry = graph.tiny_registry  # the graph tests' fixture
TINY_MODEL = graph.TINY_MODEL


# The killed run commits after every batch (the CLI's own main, with the committer's interval at 0),
# so it dies with part of the image table committed; the re-run is the plain CLI.
COMMIT_EVERY_BATCH = (
    "import sys; from fashion_search_pipeline import embedding_sync; embedding_sync.WRITE_INTERVAL_S = 0.0; "
    "from fashion_search_pipeline.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def _cli(env: dict, *args: str, commit_every_batch: bool = False, **popen) -> subprocess.Popen:
    entry = ["-c", COMMIT_EVERY_BATCH] if commit_every_batch else ["-m", "fashion_search_pipeline.cli"]
    return subprocess.Popen(
        [sys.executable, *entry, "materialize", "--model", TINY_MODEL, *args], env=env, text=True, **popen
    )


def _small_batches(registry: str, folder) -> str:
    """The tiny registry with 2 items per batch: many commits, so the kill lands between two."""
    models = yaml.safe_load(Path(registry).read_text())
    models["models"][TINY_MODEL]["batch_size"] = 2
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(models))
    return str(path)


def _rows(db_folder, modality: str) -> pl.Series:
    """The item ids in the tiny model's table of `modality` (empty when the table does not exist yet)."""
    try:
        table = lancedb.connect(str(db_folder)).open_table(f"{TINY_MODEL}__{modality}")
    except ValueError:  # not created yet (LanceDB: "Table ... was not found")
        return pl.Series("item_id", [], dtype=pl.Utf8)
    return pl.from_arrow(table.to_arrow().select(["item_id"]))["item_id"]


def _latest_embedding_metadata(instance: DagsterInstance, modality: str) -> dict:
    key = MultiPartitionKey({"model": TINY_MODEL, "modality": modality})
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("embeddings"), asset_partitions=[str(key)]), limit=1
    ).records
    metadata = records[0].event_log_entry.asset_materialization.metadata
    return {name: metadata[name].value for name in ("catalog_items", "embedded", "skipped_up_to_date")}


def _running_embedding_run(instance: DagsterInstance) -> bool:
    runs = instance.get_runs(
        RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={"dagster/partition/modality": "image"})
    )
    return bool(runs)


def test_a_killed_materialize_does_not_block_the_next_and_items_stay_unique(tmp_path, tiny_registry, monkeypatch):
    home = tmp_path / "home"
    landing = home / "landing"
    drops = write_demo_landing(landing, variants=4)
    env = {**os.environ, "FASHION_SEARCH_HOME": str(home), "FASHION_SEARCH_MODELS": _small_batches(tiny_registry, tmp_path)}
    env.pop("DAGSTER_HOME", None)
    killed = _cli(env, commit_every_batch=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (home / "dagster" / "dagster.yaml").exists():
        time.sleep(0.1)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    instance = open_instance(home / "dagster")  # under the instance lock, like every CLI process
    while not (_running_embedding_run(instance) and _rows(home / "lancedb", "image").len()):
        assert killed.poll() is None and time.monotonic() < deadline, "the first run ended before its image step"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    items = sum(
        len((landing / "drops" / drop / "captions.csv").read_text(encoding="utf-8").splitlines()) - 1 for drop in drops
    )
    committed = {modality: _rows(home / "lancedb", modality) for modality in ("image", "text")}
    assert 0 < committed["image"].len() < items, "the kill did not land between two commits"
    assert committed["image"].n_unique() == committed["image"].len()

    started = time.monotonic()
    again = _cli(env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output[-3000:]
    assert "is gone; marked failed and its pool slots freed" in output
    assert time.monotonic() - started < 600

    for modality in ("image", "text"):
        ids = _rows(home / "lancedb", modality)
        assert ids.len() == ids.n_unique() == items, modality
        done = committed[modality].len()
        embedded = _latest_embedding_metadata(instance, modality)
        print(f"{modality}: {done} committed by the killed run; the re-run's metadata: {embedded}")
        assert embedded == {"catalog_items": items, "embedded": items - done, "skipped_up_to_date": done}, modality
