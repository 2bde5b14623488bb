"""Table write locks: concurrent writer processes never duplicate an id, locally and on S3."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from fashion_search_pipeline.config import S3Settings
from fashion_search_pipeline.store import tables
from fashion_search_pipeline.store.locking import (
    LockSettings,
    LockTimeoutError,
    LockWaitStopped,
    S3Lease,
    stop_waiting,
    table_lock,
)

from .concurrent_writers import race, table_outcome, writer_rows

TRIALS = 12
IDS = [f"item-{i:04d}" for i in range(500)]


def seeded_tables(db, count: int) -> list[str]:
    """`count` tables that exist already, each with one row (the probe wrote into existing tables)."""
    names = [f"race{trial}__image" for trial in range(count)]
    for name in names:
        tables.upsert_rows(db, name, writer_rows(["seed"], 0))
    return names


def assert_each_id_once(db, names):
    outcomes = {name: table_outcome(db, name) for name in names}
    assert outcomes == {name: {"rows": len(IDS) + 1, "ids": len(IDS) + 1, "whole_rows": True} for name in names}


@pytest.mark.slow  # races writer subprocesses
def test_two_processes_upserting_the_same_new_ids_leave_each_once(tmp_path):
    uri = str(tmp_path / "lancedb")
    db = tables.connect(uri)
    names = seeded_tables(db, TRIALS)
    race(uri, None, names, IDS)
    assert_each_id_once(db, names)


@pytest.fixture
def s3_db(s3_endpoint, s3_client, request):
    bucket = f"locks-{request.node.name.lower().replace('_', '-')[:40]}"
    s3_client.create_bucket(Bucket=bucket)
    settings = S3Settings(
        endpoint_url=s3_endpoint["endpoint_url"],
        region=s3_endpoint["region"],
        access_key_id=s3_endpoint["key"],
        secret_access_key=s3_endpoint["secret"],
    )
    return f"s3://{bucket}/lancedb", settings.lancedb_options(), s3_client, bucket


@pytest.mark.slow  # races writer subprocesses
def test_two_processes_upserting_the_same_new_ids_on_s3_leave_each_once(s3_db):
    uri, options, _, _ = s3_db
    db = tables.connect(uri, options)
    names = seeded_tables(db, TRIALS)
    race(uri, options, names, IDS)
    assert_each_id_once(db, names)


def test_a_folder_lock_excludes_another_process_and_reports_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fashion_search_pipeline.store.locking import table_lock\n"
            f"with table_lock({str(tmp_path)!r}, 't'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        reports: list[str] = []
        with pytest.raises(LockTimeoutError, match=rf"table 't'.*pid {holder.pid}"):
            with table_lock(str(tmp_path), "t", settings=LockSettings(timeout_s=0.6, report_every_s=0.2),
                            report=reports.append):
                pass
        assert reports and all(f"held by pid {holder.pid}" in line for line in reports)
    finally:
        holder.kill()
        holder.wait()
    with table_lock(str(tmp_path), "t", settings=LockSettings(timeout_s=5)):
        pass  # a killed holder's flock is gone with its process


def test_an_s3_lease_is_exclusive_renewed_while_held_and_taken_over_once_unrenewed(s3_db):
    _, _, client, bucket = s3_db
    settings = LockSettings(timeout_s=10, ttl_s=0.6, report_every_s=0.1)
    first = S3Lease(client, bucket, "lancedb/_locks/t.lease", settings=settings)
    second = S3Lease(client, bucket, "lancedb/_locks/t.lease", settings=settings)
    entered: list[float] = []
    with first.held():
        waiter = threading.Thread(target=lambda: (second.acquire(), entered.append(time.monotonic())))
        waiter.start()
        time.sleep(1.5)  # more than two TTLs: only renewals keep the waiter out
        assert entered == [] and not first.lost.is_set()
        released = time.monotonic()
    waiter.join(timeout=10)
    assert entered and entered[0] >= released
    # The second holder now "dies": it stops renewing and never releases.
    body = json.loads(client.get_object(Bucket=bucket, Key="lancedb/_locks/t.lease")["Body"].read())
    reports: list[str] = []
    third = S3Lease(client, bucket, "lancedb/_locks/t.lease", settings=settings)
    started = time.monotonic()
    third.acquire(reports.append)
    assert time.monotonic() - started >= settings.ttl_s
    assert any("took over" in line and str(body["pid"]) in line for line in reports)
    third.release()
    assert client.list_objects_v2(Bucket=bucket, Prefix="lancedb/_locks/").get("KeyCount") == 0


def test_duplicates_left_by_unserialised_writers_are_repaired_keeping_the_last_row(tmp_path):
    db = tables.connect(str(tmp_path / "lancedb"))
    tables.upsert_rows(db, "old__image", writer_rows(IDS[:50], 0))
    db.open_table("old__image").add(writer_rows(IDS[:20], 1))  # what two racing merge-inserts left behind
    keys = tables.embedded_keys(db, "old__image")
    assert tables.duplicated_item_ids(keys) == IDS[:20]
    assert tables.repair_duplicates(db, "old__image", tables.duplicated_item_ids(keys)) == 20
    outcome = table_outcome(db, "old__image")
    assert outcome == {"rows": 50, "ids": 50, "whole_rows": True}
    stored = {row["item_id"]: row["drop_id"] for row in db.open_table("old__image").to_arrow().to_pylist()}
    assert all(stored[item] == "writer-1" for item in IDS[:20]) and stored[IDS[20]] == "writer-0"


def test_stop_waiting_ends_a_lease_wait_at_once_and_a_won_lease_is_not_left_behind(s3_db):
    _, _, client, bucket = s3_db
    settings = LockSettings(timeout_s=30, ttl_s=30)
    holder = S3Lease(client, bucket, "lancedb/_locks/s.lease", settings=settings)
    waiter = S3Lease(client, bucket, "lancedb/_locks/s.lease", settings=settings)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            with waiter.held():
                pass
        except BaseException as error:  # noqa: BLE001 - the test looks at what ended the wait
            outcome.append(error)

    with holder.held():
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        stop_waiting()
        try:
            thread.join(timeout=5)
        finally:
            stop_waiting(False)
        assert time.monotonic() - started < 1.0
    assert [type(error) for error in outcome] == [LockWaitStopped]
    assert "stopped waiting for the lease" in str(outcome[0])
    assert client.list_objects_v2(Bucket=bucket, Prefix="lancedb/_locks/").get("KeyCount") == 0
    with waiter.held():  # waits go on again once stop_waiting(False)
        pass
