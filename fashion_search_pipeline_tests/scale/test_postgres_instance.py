"""Dagster on PostgreSQL (deploy/dagster.yaml): the drop sensor and a drop's runs on a real server."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.run_coordinator import QueuedRunCoordinator

from fashion_search_pipeline.defs.catalog_assets import DROP_ASSETS
from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.defs.resources import CatalogStorage, s3_resource_for
from fashion_search_pipeline.defs.sensors import catalog_drop_sensor
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.defs.conftest import make_defs

DEPLOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


def dagster_home(folder: Path, settings: dict[str, str], monkeypatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml, with the DAGSTER_PG_* variables it reads set."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    folder.mkdir()
    shutil.copy(DEPLOY_YAML, folder / "dagster.yaml")
    return folder


def sensor_tick(instance, storage: CatalogStorage, cursor: str | None):
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": storage, "s3": s3_resource_for(storage)}
    )
    return catalog_drop_sensor(context)


def test_drop_sensor_and_drop_runs_keep_their_state_in_postgres(postgres, tmp_path, monkeypatch, tiny_registry):
    home = dagster_home(tmp_path / "dagster", postgres, monkeypatch)
    landing = tmp_path / "landing"
    drop_id = f"pg-{tmp_path.name[-12:]}".replace("_", "-")
    write_drop(landing / "drops" / drop_id, demo_items(variants=1)[:8])
    storage = CatalogStorage(landing_uri=str(landing), db_uri=str(tmp_path / "lancedb"))
    defs = make_defs(landing, tmp_path, tiny_registry, storage)

    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        tick = sensor_tick(instance, storage, None)
        assert [request.partition_key for request in tick.run_requests] == [drop_id]
        for request in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        runner = GraphRunner(defs, instance, log=lambda _: None, console_log_level="ERROR")
        drop_run = runner.run(f"drop {drop_id}", list(DROP_ASSETS), drop_id)
        assert runner.catalog() and runner.ok, runner.failures
        assert not sensor_tick(instance, storage, tick.cursor).run_requests  # the cursor, kept in PostgreSQL
        assert instance.get_run_by_id(drop_run.run_id).status == DagsterRunStatus.SUCCESS

    # A second process (a daemon, a webserver) sees the same state: read it from PostgreSQL itself.
    connection = psycopg2.connect(
        host=postgres["DAGSTER_PG_HOST"], port=postgres["DAGSTER_PG_PORT"], user=postgres["DAGSTER_PG_USERNAME"],
        password=postgres["DAGSTER_PG_PASSWORD"], dbname=postgres["DAGSTER_PG_DB"],
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (drop_run.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (drop_run.run_id,),
        )
        assert cursor.fetchone() == (len(DROP_ASSETS),)
        cursor.execute("SELECT partition FROM dynamic_partitions WHERE partition = %s", (drop_id,))
        assert cursor.fetchone() == (drop_id,)
    connection.close()


def test_postgres_down_surfaces_dagsters_error_and_writes_nothing(tmp_path, monkeypatch, tiny_registry):
    with socket.socket() as probe:  # a port no server listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USERNAME": "dagster",
                "DAGSTER_PG_PASSWORD": "unused", "DAGSTER_PG_DB": "dagster"}
    home = dagster_home(tmp_path / "dagster", settings, monkeypatch)
    landing = tmp_path / "landing"
    write_drop(landing / "drops" / "d1", demo_items(variants=1)[:3])

    with pytest.raises(Exception) as failure:
        with DagsterInstance.from_config(str(home)) as instance:
            GraphRunner(make_defs(landing, tmp_path, tiny_registry), instance, log=lambda _: None).drops(["d1"])

    chain, error = [], failure.value
    while error is not None:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    text = "\n".join(chain)
    assert "OperationalError" in text and str(port) in text, text
    assert not (tmp_path / "assets").exists() and not (tmp_path / "lancedb").exists()
