"""Incremental drops landing in S3 (moto's real HTTP server), driven as the Dagster daemon drives them.

Each `tick` evaluates the real `catalog_drop_sensor`, applies its partition requests, runs what it
asked for, then evaluates the assets' automation conditions and runs what they request, until quiet.
Landing, asset values and the LanceDB tables all live in the S3 bucket.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import boto3
import pytest
from dagster import AssetKey, MultiPartitionKey, build_sensor_context, evaluate_automation_conditions, materialize

from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.defs.resources import CatalogStorage, s3_resource_for
from fashion_search_pipeline.defs.sensors import catalog_drop_sensor
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store import tables
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL, make_defs


@dataclass
class Daemon:
    """The sensor's and the automation's cursors, kept across ticks like the daemon keeps them."""

    defs: object
    storage: CatalogStorage
    instance: object
    sensor_cursor: str | None = None
    automation_cursor: object = None
    embedded: dict = field(default_factory=dict)

    def start(self):
        self.automation_cursor = evaluate_automation_conditions(defs=self.defs, instance=self.instance).cursor
        return self

    def _materialize(self, selection, partition_key=None):
        runner = GraphRunner(self.defs, self.instance, log=lambda _: None)
        return runner.run(" ".join(selection), selection, partition_key)

    def tick(self) -> list[str]:
        """One sensor tick plus automation until nothing more is requested; returns the drops run."""
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.sensor_cursor,
            resources={"storage": self.storage, "s3": s3_resource_for(self.storage)},
        )
        result = catalog_drop_sensor(context)
        self.sensor_cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        drops = [request.partition_key for request in result.run_requests or []]
        for drop_id in drops:
            self._materialize(["raw_captions", "image_manifest", "catalog_deletions", "cleaned_captions"], drop_id)
        self.embedded = {}
        while True:
            evaluation = evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, cursor=self.automation_cursor
            )
            self.automation_cursor = evaluation.cursor
            requested = evaluation.get_requested_partitions(AssetKey("catalog_items"))
            partitions = evaluation.get_requested_partitions(AssetKey("embeddings"))
            if not requested and not partitions:
                return drops
            if requested:
                assert self._materialize(["catalog_items"]).success
            for key in sorted(partitions):
                run = self._materialize(["embeddings"], key)
                assert run.success
                materialization = run.asset_materializations_for_node("embeddings")[0]
                self.embedded[key] = materialization.metadata["embedded"].value


@pytest.fixture
def s3_world(s3_endpoint, tmp_path, tiny_registry, instance):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    )
    bucket = f"shop-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    storage = CatalogStorage(
        landing_uri=f"s3://{bucket}/landing",
        db_uri=f"s3://{bucket}/lancedb",
        s3_endpoint_url=s3_endpoint["endpoint_url"],
        s3_region=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    )
    defs = make_defs(storage.landing_uri, tmp_path, tiny_registry, storage=storage)
    return client, bucket, Daemon(defs, storage, instance).start()


def upload_drop(client, bucket: str, drop_id: str, items, *, marker=True, deletions=(), seed=7) -> None:
    """Write a drop with the demo generator and upload it, the marker last."""
    with tempfile.TemporaryDirectory() as folder:
        local = write_drop(Path(folder), list(items), seed=seed, marker=False)
        if deletions:
            (local / "deletions.csv").write_text("item_id\n" + "".join(f"{i}\n" for i in deletions))
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = f"landing/drops/{drop_id}/{path.relative_to(local).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    if marker:
        client.put_object(Bucket=bucket, Key=f"landing/drops/{drop_id}/_SUCCESS", Body=b"")


def failure_text(result) -> str:
    """The failed step's error and its causes, as a person reads them in the run log."""
    error = result.get_step_failure_events()[0].event_specific_data.error
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def table_ids(storage: CatalogStorage, modality: str) -> list[str]:
    table = storage.connect_db().open_table(tables.table_name(TINY_MODEL, modality))
    return sorted(table.to_arrow().column("item_id").to_pylist())


def test_drops_flow_from_s3_to_searchable_lancedb_tables_on_s3(s3_world):
    client, bucket, daemon = s3_world
    items = demo_items(variants=1)

    upload_drop(client, bucket, "2026-11-01", items[:8], marker=False)
    assert daemon.tick() == []  # no marker: not processed

    client.put_object(Bucket=bucket, Key="landing/drops/2026-11-01/_SUCCESS", Body=b"")
    assert daemon.tick() == ["2026-11-01"]
    assert daemon.embedded == {f"image|{TINY_MODEL}": 8, f"text|{TINY_MODEL}": 8}
    assert table_ids(daemon.storage, "text") == sorted(i.item_id for i in items[:8])

    updated = replace(items[0], description="Mira Women Green Wrap Dress", article_type="Dress", colour="Green")
    upload_drop(client, bucket, "2026-11-08", [updated, *items[8:11]], seed=8)
    upload_drop(client, bucket, "2026-11-09", items[11:13], deletions=[items[1].item_id], seed=9)
    assert daemon.tick() == ["2026-11-08", "2026-11-09"]
    # only the updated item and the 5 new ones are embedded; the deleted one is gone
    assert daemon.embedded == {f"image|{TINY_MODEL}": 6, f"text|{TINY_MODEL}": 6}
    expected = sorted(i.item_id for i in [*items[:13]] if i.item_id != items[1].item_id)
    assert table_ids(daemon.storage, "image") == expected
    assert table_ids(daemon.storage, "text") == expected

    search = CatalogSearch(daemon.storage.db_uri, storage_options=daemon.storage.s3().lancedb_options(),
                           registry=daemon.defs.resources["models"].models_file)
    hits = search.text("Mira Women Green Wrap Dress", model=TINY_MODEL, k=12, fusion="text")
    assert hits["item_id"][0] == items[0].item_id
    assert hits.filter(hits["item_id"] == items[0].item_id)["description"][0] == "Mira Women Green Wrap Dress"
    assert items[1].item_id not in hits["item_id"].to_list()

    # a restarted sensor (same stored cursor) and a quiet tick process nothing and embed nothing
    restarted = Daemon(daemon.defs, daemon.storage, daemon.instance, daemon.sensor_cursor, daemon.automation_cursor)
    assert restarted.tick() == []
    assert restarted.embedded == {}


def test_rerunning_embeddings_on_s3_embeds_nothing(s3_world):
    client, bucket, daemon = s3_world
    upload_drop(client, bucket, "d1", demo_items(variants=1)[:5])
    daemon.tick()
    run = daemon._materialize(["embeddings"], MultiPartitionKey({"model": TINY_MODEL, "modality": "text"}))
    assert run.success
    metadata = run.asset_materializations_for_node("embeddings")[0].metadata
    assert metadata["embedded"].value == 0
    assert metadata["dagster/row_count"].value == 5


def test_drop_without_captions_fails_naming_it_and_others_proceed(s3_world):
    client, bucket, daemon = s3_world
    upload_drop(client, bucket, "good", demo_items(variants=1)[:3])
    client.put_object(Bucket=bucket, Key="landing/drops/broken/images/a.jpg", Body=b"x")
    client.put_object(Bucket=bucket, Key="landing/drops/broken/_SUCCESS", Body=b"")

    assert daemon.tick() == ["broken", "good"]
    failed = daemon._materialize(["raw_captions"], "broken")
    assert not failed.success
    failure = failure_text(failed)
    assert "drop 'broken'" in failure and "captions.csv" in failure
    assert table_ids(daemon.storage, "text") == sorted(i.item_id for i in demo_items(variants=1)[:3])
    assert daemon.tick() == []  # the sensor does not request the failed drop again


def test_wrong_credentials_give_a_clear_error_and_write_nothing(s3_world, tmp_path, tiny_registry):
    client, bucket, daemon = s3_world
    upload_drop(client, bucket, "d1", demo_items(variants=1)[:3])
    daemon.tick()
    before = table_ids(daemon.storage, "text")

    bad = daemon.storage.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"})
    defs = make_defs(bad.landing_uri, tmp_path / "bad", tiny_registry, storage=bad)
    daemon.instance.add_dynamic_partitions("catalog_drops", ["d2"])
    result = materialize(list(defs.assets), instance=daemon.instance, resources=defs.resources,
                         selection=["raw_captions"], partition_key="d2", raise_on_error=False)
    assert not result.success
    message = failure_text(result)
    assert "drop 'd2'" in message
    assert table_ids(daemon.storage, "text") == before
