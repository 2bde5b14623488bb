"""Probes: concurrent first runs on a new DAGSTER_HOME, and a run killed with SIGKILL holding a pool slot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from dagster import DagsterInstance, DagsterRunStatus

from fashion_search_pipeline.dagster_home import (
    PROJECT_INSTANCE_CONFIG,
    free_dead_runs,
    open_instance,
    pool_waits,
)

FIRST_RUNS = 12

# One process of a first run: open the instance, then write to it the way the CLI does.
FIRST_RUN = """
import sys
from pathlib import Path
from fashion_search_pipeline.dagster_home import open_instance
instance = open_instance(Path(sys.argv[1]))
instance.add_dynamic_partitions("catalog_drops", [f"drop-{sys.argv[2]}"])
print(len(instance.get_runs()))
"""

# A run whose only step, in pool "embedding", sleeps until it is killed.
SLOW_RUN = """
import sys, time
from pathlib import Path
from dagster import asset, materialize
from fashion_search_pipeline.dagster_home import open_instance

@asset(pool="embedding")
def slow_embeddings():
    print("step started", flush=True)
    time.sleep(600)

@asset(pool="embedding")
def quick_embeddings():
    return 1

instance = open_instance(Path(sys.argv[1]))
selected = slow_embeddings if sys.argv[2] == "slow" else quick_embeddings
result = materialize([selected], instance=instance, raise_on_error=False)
print("success" if result.success else "failed", flush=True)
"""


def _python(code: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], text=True, **popen)


def test_concurrent_first_runs_on_a_new_home_all_succeed_and_the_instance_opens(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    processes = [
        _python(FIRST_RUN, str(home), str(n), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for n in range(FIRST_RUNS)
    ]
    outcomes = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * FIRST_RUNS, [err[-2000:] for _, err in outcomes]
    assert (home / "dagster.yaml").read_text() == PROJECT_INSTANCE_CONFIG.read_text()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    assert sorted(instance.get_dynamic_partitions("catalog_drops")) == sorted(f"drop-{n}" for n in range(FIRST_RUNS))
    assert instance.run_monitoring_enabled


def test_an_existing_dagster_yaml_is_left_as_it_is(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    open_instance(home)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_a_run_killed_with_sigkill_does_not_block_the_next_one(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    slow = _python(SLOW_RUN, str(home), "slow", stdout=subprocess.PIPE)
    assert slow.stdout.readline().strip() == "step started"
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait()

    instance = open_instance(home)
    [dead] = instance.get_runs()
    assert dead.status == DagsterRunStatus.STARTED  # nobody told Dagster the process died
    next_run = _python(SLOW_RUN, str(home), "quick", stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not pool_waits(instance) and time.monotonic() < deadline:
            time.sleep(0.5)
        [waiting] = pool_waits(instance)
        assert "pool 'embedding'" in waiting and dead.run_id[:8] in waiting and "quick_embeddings" in waiting
        reports: list[str] = []
        assert free_dead_runs(instance, reports.append) == [dead.run_id]
        assert f"process {slow.pid} is gone" in reports[0]
        assert next_run.communicate(timeout=120)[0].strip() == "success"
    finally:
        next_run.kill()
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert free_dead_runs(instance, reports.append) == []
