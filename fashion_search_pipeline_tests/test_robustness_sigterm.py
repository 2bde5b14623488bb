"""Probe: a `fashion-search materialize` blocked on a pool slot or a table lock, then one SIGTERM.

Before: the run said nothing and ignored SIGTERM (Dagster's in-process executor only sets a flag
while a step waits for a pool slot); an interrupted lock wait only failed its run, and the CLI went
on with the next one. Now the blocked run says what it waits for every few seconds, and the first
SIGTERM ends the command within seconds, with a clear line and a non-zero exit, holding nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from fashion_search_pipeline.dagster_home import TerminationRequested, open_instance, stopping_on_sigterm
from fashion_search_pipeline.demo_catalog import write_demo_landing
from fashion_search_pipeline.store.locking import LockSettings, LockWaitStopped, table_lock
from fashion_search_pipeline_tests.defs import conftest as graph

tiny_registry = graph.tiny_registry  # the graph tests' fixture
TINY_MODEL = graph.TINY_MODEL
STOP_WITHIN_S = 15.0

# Another live run holding the one `embedding` pool slot: its only step sleeps until it is killed.
POOL_HOLDER = """
import sys, time
from pathlib import Path
from dagster import asset, materialize
from fashion_search_pipeline.dagster_home import TerminationRequested, open_instance, stopping_on_sigterm

@asset(pool="embedding")
def holds_the_embedding_slot():
    print("holding", flush=True)
    time.sleep(600)

materialize([holds_the_embedding_slot], instance=open_instance(Path(sys.argv[1])), raise_on_error=False)
"""


class _Output:
    """The lines a subprocess prints (stdout and stderr together), read as they come."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, fragment: str, timeout_s: float) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(fragment in line for line in self.lines), timeout_s)
        assert found, f"no {fragment!r} within {timeout_s:.0f}s:\n{self.text[-3000:]}"


def _home(tmp_path: Path, tiny_registry: str, monkeypatch) -> tuple[Path, dict, DagsterInstance]:
    home = tmp_path / "home"
    write_demo_landing(home / "landing", variants=1)
    env = {**os.environ, "FASHION_SEARCH_HOME": str(home), "FASHION_SEARCH_MODELS": tiny_registry,
           "PYTHONUNBUFFERED": "1"}
    env.pop("DAGSTER_HOME", None)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home, env, open_instance(home / "dagster")


def _materialize(env: dict) -> tuple[subprocess.Popen, _Output]:
    process = subprocess.Popen(
        [sys.executable, "-m", "fashion_search_pipeline.cli", "materialize", "--model", TINY_MODEL],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    return process, _Output(process)


def _stop_with_one_sigterm(process: subprocess.Popen, output: _Output) -> float:
    """Send one SIGTERM; assert the command ends within STOP_WITHIN_S with exit code 143, saying why. Returns seconds."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        returncode = process.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {STOP_WITHIN_S:.0f}s after one SIGTERM:\n{output.text[-3000:]}")
    seconds = time.monotonic() - started
    time.sleep(0.2)  # the reader thread takes the last lines
    assert returncode == 128 + signal.SIGTERM, output.text[-3000:]  # 143, as for a process SIGTERM ends
    assert "fashion-search: SIGTERM received: stopping" in output.text
    assert "fashion-search materialize: stopped by SIGTERM" in output.text
    assert "Traceback" not in output.text
    return seconds


def _assert_cli_runs_hold_nothing(instance: DagsterInstance, except_run: str | None = None) -> None:
    """No run of the CLI is left in progress, and none holds or waits for an `embedding` slot."""
    runs = [run for run in instance.get_runs() if run.run_id != except_run]
    assert runs and all(run.is_finished for run in runs), [(run.run_id, run.status) for run in runs]
    assert any(run.status == DagsterRunStatus.FAILURE for run in runs)
    info = instance.event_log_storage.get_concurrency_info("embedding")
    assert {slot.run_id for slot in info.claimed_slots} <= {except_run}
    assert {step.run_id for step in info.pending_steps} <= {except_run}


@pytest.mark.slow  # two subprocesses: a run holding the pool slot and the CLI
def test_a_materialize_waiting_for_a_pool_slot_stops_on_one_sigterm(tmp_path, tiny_registry, monkeypatch):
    home, env, instance = _home(tmp_path, tiny_registry, monkeypatch)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(POOL_HOLDER), str(home / "dagster")],
        env=env, text=True, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        [holding_run] = instance.get_runs()
        cli, output = _materialize(env)
        output.wait_for("waiting for pool 'embedding'", timeout_s=240)
        seconds = _stop_with_one_sigterm(cli, output)
        print(f"stopped {seconds:.1f}s after SIGTERM while waiting for the pool slot")
        _assert_cli_runs_hold_nothing(instance, except_run=holding_run.run_id)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow  # a CLI subprocess materializing the graph
def test_a_materialize_waiting_for_a_table_lock_stops_on_one_sigterm(tmp_path, tiny_registry, monkeypatch):
    home, env, instance = _home(tmp_path, tiny_registry, monkeypatch)
    with table_lock(str(home / "lancedb"), f"{TINY_MODEL}__image"):
        cli, output = _materialize(env)
        output.wait_for(f"table '{TINY_MODEL}__image': waiting for its write lock", timeout_s=240)
        seconds = _stop_with_one_sigterm(cli, output)
        print(f"stopped {seconds:.1f}s after SIGTERM while waiting for the table lock")
    assert not instance.get_runs(RunsFilter(tags={"dagster/partition/modality": "text"}))  # none began after it
    _assert_cli_runs_hold_nothing(instance)
    with table_lock(str(home / "lancedb"), f"{TINY_MODEL}__image", settings=LockSettings(timeout_s=1.0)):
        pass  # free at once


def test_a_sigterm_between_runs_ends_the_block_at_once_and_restores_the_handlers():
    reports: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(TerminationRequested):
        with stopping_on_sigterm(reports.append):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    assert time.monotonic() - started < 2
    assert reports and reports[0].startswith("fashion-search: SIGTERM received: stopping")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_during_a_run_stops_a_table_lock_wait_on_a_writer_thread_then_the_block(tmp_path):
    from dagster._utils.interrupts import capture_interrupts  # the handlers Dagster installs for a run

    outcome: list[BaseException] = []

    def writer() -> None:
        try:
            with table_lock(str(tmp_path), "t__image"):
                pass
        except BaseException as error:  # noqa: BLE001 - the test looks at what ended the wait
            outcome.append(error)

    thread = threading.Thread(target=writer)
    with table_lock(str(tmp_path), "t__image"), pytest.raises(TerminationRequested):
        with stopping_on_sigterm(lambda message: None):
            with capture_interrupts():  # inside a run: SIGTERM only sets Dagster's flag
                thread.start()
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGTERM)
                thread.join(timeout=5)
                assert not thread.is_alive()
            time.sleep(10)  # between runs: the block ends at once
    assert [type(error) for error in outcome] == [LockWaitStopped]
    assert "t__image" in str(outcome[0]) and "stopped waiting for its write lock" in str(outcome[0])
