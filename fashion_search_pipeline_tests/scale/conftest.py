"""Fixtures for the scale-out tests: a real local Ray cluster on loopback only, a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from fashion_search_pipeline_tests.defs.conftest import tiny_registry  # noqa: F401 (a fixture these tests share)

# Measured here: outside a private network namespace Ray binds and dials the machine's external
# address even when told 127.0.0.1, so it must never start there.
NO_NAMESPACE = (
    "Ray tests run only inside a private network namespace with loopback alone "
    "(outside one Ray dials the machine's external address): run `make test-ray` as root, "
    "which uses `unshare -n`"
)


def loopback_only() -> bool:
    """True inside a network namespace whose only interface is loopback (as `unshare -n` makes)."""
    # socket.if_nameindex asks the kernel about this process's namespace (/sys/class/net may not).
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster (GCS, raylet, workers) started by this process, with 2 logical CPUs."""
    if not loopback_only():
        pytest.skip(NO_NAMESPACE)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def encoder_actor_pids() -> list[int]:
    """Process ids of this machine's live Ray Data model actors (ClipEncoder workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::") and b"ClipEncoder" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


# ---- PostgreSQL -------------------------------------------------------------------------------

PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def _pg_bin() -> Path | None:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")))
    return found[-1] if found and (found[-1] / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: run `command` as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="session")
def postgres() -> dict[str, str]:
    """A real PostgreSQL server on 127.0.0.1, as DAGSTER_PG_* settings.

    The one `.ci/run` started when DAGSTER_PG_HOST is set; else a throwaway server in a temp folder
    (Debian's postgresql package); else the tests skip, saying how to get one.
    """
    if os.environ.get("DAGSTER_PG_HOST"):
        yield {name: os.environ.get(name, "") for name in PG_VARIABLES}
        return
    binaries = _pg_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed: `apt-get install -y postgresql` (.ci/run does)")
    folder = Path(tempfile.mkdtemp(prefix="fsp-postgres-"))
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    initdb = _as_postgres(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    subprocess.run(initdb, check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    pg_ctl = str(binaries / "pg_ctl")
    subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"),
                   check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                    "dagster"), check=True, capture_output=True)
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USERNAME": "postgres",
               "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster"}
    finally:
        subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
