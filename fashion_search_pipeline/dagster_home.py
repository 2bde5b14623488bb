"""The Dagster instance the CLI runs on: set up once, safely, and cleared of dead runs' pool slots.

- `open_instance` installs the project's dagster.yaml (pool limits, run monitoring) into a
  DAGSTER_HOME that has none, and opens the instance under an flock on `<home>/.instance.lock`:
  two first runs at once on a new home once corrupted its sqlite schema for good ("more than one
  head") in 1 of 18 trials, and crashed one process in 4 of 18.
- `free_dead_runs` fails the in-process runs whose process is gone and frees their pool slots:
  a run killed with SIGKILL kept its `embedding` slot, and the next run waited for it forever.
- `reporting_pool_waits` says, every few seconds, which pool a run waits for and who holds it.
- `stopping_on_sigterm` makes the first SIGTERM (or Ctrl-C) stop the CLI's runs: a run waiting for
  a pool slot ignored SIGTERM, and an interrupted step only failed its run before the next one began.

These helpers manage the instance, so they import dagster; the pure packages never do.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from fashion_search_pipeline.store.locking import stop_waiting

PROJECT_INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"
INSTANCE_FILE = "dagster.yaml"
LOCK_FILE = ".instance.lock"
_IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
_PID_PREFIX = "Executing steps in process (pid: "


def open_instance(home: Path, config_file: Path = PROJECT_INSTANCE_CONFIG) -> DagsterInstance:
    """The instance in `home`, created there with `config_file` when the folder has no dagster.yaml.

    Sets DAGSTER_HOME for this process (runs and the UI find the same instance).
    """
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    with open(home / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            target = home / INSTANCE_FILE
            if not target.exists():
                if not config_file.is_file():
                    raise FileNotFoundError(f"the project's instance settings {config_file} are missing")
                temporary = target.with_name(f".{INSTANCE_FILE}.{os.getpid()}")
                shutil.copyfile(config_file, temporary)
                os.replace(temporary, target)
            instance = DagsterInstance.get()
            instance.get_runs(limit=1)  # creates and migrates the sqlite schemas, still under the lock
            instance.event_log_storage.get_concurrency_keys()
            return instance
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_process_id(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid that executes the run's steps in process, from its engine event (None if not recorded)."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        message = (record.dagster_event.message or "") if record.dagster_event else ""
        if message.startswith(_PID_PREFIX):
            return int(message[len(_PID_PREFIX) :].split(")", 1)[0])
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_dead_runs(instance: DagsterInstance, report: Callable[[str], None] = print) -> list[str]:
    """Fail this machine's in-progress runs whose process is gone, free their pool slots; returns their ids.

    Only a single-machine (sqlite) instance is checked here: a pid means nothing on another
    machine, and a shared (PostgreSQL) instance relies on the daemon's run monitoring instead.
    Slots still held by finished runs are freed too.
    """
    if "Sqlite" not in type(instance.run_storage).__name__:
        return []
    freed = []
    for run in instance.get_runs(RunsFilter(statuses=_IN_PROGRESS)):
        pid = run_process_id(instance, run.run_id)
        if pid is None or pid == os.getpid() or _process_alive(pid):
            continue
        instance.report_run_failed(run, f"its process {pid} is gone (killed?); failed by fashion-search")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        report(f"run {run.run_id}: its process {pid} is gone; marked failed and its pool slots freed")
        freed.append(run.run_id)
    storage = instance.event_log_storage
    for pool in storage.get_concurrency_keys():
        for run_id in storage.get_concurrency_info(pool).active_run_ids:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                report(f"pool {pool!r}: freed the slot of finished run {run_id}")
                freed.append(run_id)
    return freed


def pool_waits(instance: DagsterInstance) -> list[str]:
    """One line per pool with steps waiting for a slot: who waits, who holds the slots."""
    storage = instance.event_log_storage
    lines = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        pending = [step for step in info.pending_steps if step.assigned_timestamp is None]
        waiting = sorted({f"{step.run_id[:8]}:{step.step_key}" for step in pending})
        if waiting:
            holders = ", ".join(f"{slot.run_id[:8]}:{slot.step_key}" for slot in info.claimed_slots) or "nobody"
            lines.append(
                f"waiting for pool {pool!r} ({info.slot_count} slot(s), held by {holders}): {', '.join(waiting)}"
            )
    return lines


@contextmanager
def reporting_pool_waits(
    instance: DagsterInstance, report: Callable[[str], None] = print, every_s: float = 5.0
) -> Iterator[None]:
    """While the block runs, report every `every_s` seconds what any step waits for (see pool_waits)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            for line in pool_waits(instance):
                report(line)

    watcher = threading.Thread(target=watch, name="pool-waits", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


class TerminationRequested(KeyboardInterrupt):
    """A SIGTERM or Ctrl-C stopped the runs (a KeyboardInterrupt, so Dagster fails the run it interrupts).
    `signum`: the signal that asked for it (a command exits with 128 + signum: 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


_STOPPED_BY = (signal.SIGTERM, signal.SIGINT)
_POKE = signal.SIGUSR2
_POKE_EVERY_S = 0.05
# Where Dagster's in-process executor loops while no step can start (a pool slot is taken).
_EXECUTOR_WAIT = frozenset({"get_next_step", "sleep_til_ready"})


def _in_executor_wait(frame: FrameType | None) -> bool:
    while frame is not None:
        code = frame.f_code
        if code.co_name in _EXECUTOR_WAIT and "dagster" in code.co_filename:
            return True
        frame = frame.f_back
    return False


@contextmanager
def stopping_on_sigterm(report: Callable[[str], None] = print) -> Iterator[None]:
    """Stop the block's in-process Dagster runs promptly on the first SIGTERM or Ctrl-C.

    Inside a run Dagster maps SIGTERM to SIGINT: in a step's own code it interrupts the step (a lock
    wait ends there), elsewhere it only sets a flag, which the in-process executor never reads while
    a step waits for a pool slot; and `materialize` turns an interrupted run into a failed result
    the caller follows with its next run. So the signal is seen here through the wakeup fd, whatever
    handler Dagster has installed, and then the main thread is poked every 50 ms until it raises
    TerminationRequested: in the executor's wait loop (Dagster fails the run and frees its pending
    pool claim) or between runs. The block ends with that exception; nothing else is interrupted.
    Only the main thread can install it (elsewhere it does nothing).
    """
    main = threading.main_thread()
    if threading.current_thread() is not main:
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    requested = threading.Event()  # a SIGTERM or SIGINT arrived
    received_signal = [signal.SIGINT]  # which one (the first)
    ending = threading.Event()  # the block is ending (TerminationRequested raised between runs, or left)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:  # SIGTERM and SIGINT between runs
        if ending.is_set():  # already stopping (or cleaning up): a second signal must not cut that short
            return
        requested.set()
        ending.set()
        raise TerminationRequested(f"stopped by {signal.Signals(signum).name}", signum)

    def poke(signum: int, frame: FrameType | None) -> None:
        if not requested.is_set() or ending.is_set():
            return
        if signal.getsignal(signal.SIGINT) is stop:  # between runs: Dagster restored our handler
            ending.set()
            raise TerminationRequested("stopped by a signal", received_signal[0])
        if _in_executor_wait(frame):  # Dagster fails this run; the next poke lands between runs
            raise TerminationRequested("stopped by a signal while waiting for a pool slot", received_signal[0])

    reported = threading.Event()

    def take_signals() -> None:  # the signal numbers Python wrote to the wakeup fd
        try:
            numbers = set(reader.recv(256))
        except BlockingIOError:
            return
        received = [number for number in _STOPPED_BY if number in numbers]
        if received and not reported.is_set():
            reported.set()
            received_signal[0] = received[0]
            requested.set()
            stop_waiting()  # a table-lock wait on a writer thread ends too
            report(f"fashion-search: {signal.Signals(received[0]).name} received: stopping (a run in progress "
                   "ends as failed; its pool slot and table locks are released)")

    def watch() -> None:
        while not done.is_set():
            if select.select([reader], [], [], _POKE_EVERY_S)[0]:
                take_signals()
            if requested.is_set() and not ending.is_set():
                signal.pthread_kill(main.ident, _POKE)

    previous = {number: signal.getsignal(number) for number in (*_STOPPED_BY, _POKE)}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for number in _STOPPED_BY:
        signal.signal(number, stop)
    signal.signal(_POKE, poke)
    watcher = threading.Thread(target=watch, name="sigterm-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        try:
            unfinished = requested.is_set() and not ending.is_set()
            ending.set()  # no poke raises from here on
        finally:
            done.set()
            watcher.join()
            take_signals()  # one that arrived as the block ended is still reported
            stop_waiting(False)
            signal.set_wakeup_fd(previous_fd)
            for number, handler in previous.items():
                signal.signal(number, handler)
            reader.close()
            writer.close()
    if unfinished:  # the signal came during the block's last run, which ended as failed
        raise TerminationRequested("stopped by a signal")
