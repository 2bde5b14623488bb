"""Probe: `fashion-search materialize` killed with SIGKILL during the embeddings step, then run again.

Before: the dead run kept its `embedding` pool slot and the re-run hung silently for 13+ minutes.
Now the re-run frees the slot (the dead run's process is gone), completes, and leaves each item
once, embedding only what the killed run had not committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lancedb
import polars as pl
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from fashion_search_pipeline.dagster_home import open_instance
from fashion_search_pipeline.demo_catalog import write_demo_landing
from fashion_search_pipeline_tests.defs import conftest as graph

tiny_registry = graph.tiny_registry  # the graph tests' fixture
TINY_MODEL = graph.TINY_MODEL


def _cli(env: dict, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fashion_search_pipeline.cli", "materialize", "--model", TINY_MODEL, *args],
        env=env, text=True, **popen,
    )


def _running_embedding_run(instance: DagsterInstance) -> bool:
    runs = instance.get_runs(
        RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={"dagster/partition/modality": "image"})
    )
    return bool(runs)


def test_a_killed_materialize_does_not_block_the_next_and_items_stay_unique(tmp_path, tiny_registry, monkeypatch):
    home = tmp_path / "home"
    landing = home / "landing"
    drops = write_demo_landing(landing, variants=4)
    env = {**os.environ, "FASHION_SEARCH_HOME": str(home), "FASHION_SEARCH_MODELS": tiny_registry}
    env.pop("DAGSTER_HOME", None)
    killed = _cli(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (home / "dagster" / "dagster.yaml").exists():
        time.sleep(0.1)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    instance = open_instance(home / "dagster")  # under the instance lock, like every CLI process
    while not _running_embedding_run(instance):
        assert killed.poll() is None and time.monotonic() < deadline, "the first run ended before its image step"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()

    started = time.monotonic()
    again = _cli(env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output[-3000:]
    assert "is gone; marked failed and its pool slots freed" in output
    assert time.monotonic() - started < 600

    items = sum(
        len((landing / "drops" / drop / "captions.csv").read_text(encoding="utf-8").splitlines()) - 1 for drop in drops
    )
    db = lancedb.connect(str(home / "lancedb"))
    for modality in ("image", "text"):
        ids = pl.from_arrow(db.open_table(f"{TINY_MODEL}__{modality}").to_arrow().select(["item_id"]))["item_id"]
        assert ids.len() == ids.n_unique() == items, modality
