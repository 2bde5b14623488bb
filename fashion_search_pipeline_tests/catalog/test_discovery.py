"""Drop discovery with a cursor, on a local folder and on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import boto3
import pytest

from fashion_search_pipeline.catalog.discovery import DiscoveryCursor, discover_drops
from fashion_search_pipeline.catalog.drops import FolderDropListing, S3DropListing


def _drop(root: Path, drop_id: str, *, complete: bool) -> None:
    folder = root / "drops" / drop_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "captions.csv").write_text("image_path#description\n")
    if complete:
        (folder / "_SUCCESS").write_text("")


def test_complete_drops_are_found_once_and_incomplete_ones_wait(tmp_path):
    _drop(tmp_path, "2026-11-01", complete=True)
    _drop(tmp_path, "2026-11-02", complete=False)
    listing = FolderDropListing(str(tmp_path))

    first = discover_drops(listing, DiscoveryCursor())
    assert first.ready == ["2026-11-01"]
    assert first.cursor == DiscoveryCursor("2026-11-02", ("2026-11-02",))

    again = discover_drops(listing, DiscoveryCursor.from_json(first.cursor.to_json()))
    assert again.ready == []

    (tmp_path / "drops" / "2026-11-02" / "_SUCCESS").write_text("")
    _drop(tmp_path, "2026-11-03", complete=True)
    later = discover_drops(listing, again.cursor)
    assert later.ready == ["2026-11-02", "2026-11-03"]
    assert later.cursor == DiscoveryCursor("2026-11-03", ())


def test_invalid_drop_folder_is_reported_and_not_retried(tmp_path):
    _drop(tmp_path, "bad,id[1]", complete=True)
    _drop(tmp_path, "good", complete=True)
    found = discover_drops(FolderDropListing(str(tmp_path)), DiscoveryCursor())
    assert found.ready == ["good"]
    assert "bad,id[1]" in found.invalid and "invalid drop id" in found.invalid["bad,id[1]"]
    assert discover_drops(FolderDropListing(str(tmp_path)), found.cursor).invalid == {}


def test_missing_landing_folder_lists_nothing(tmp_path):
    assert discover_drops(FolderDropListing(str(tmp_path / "nowhere")), DiscoveryCursor()).ready == []


@pytest.fixture
def bucket(s3_endpoint):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    )
    name = f"landing-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return client, name


def test_s3_listing_starts_after_the_high_water_mark(bucket):
    client, name = bucket
    for drop_id in ("2026-11-01", "2026-11-01b", "2026-11-02"):
        client.put_object(Bucket=name, Key=f"shop/drops/{drop_id}/captions.csv", Body=b"image_path#description\n")
        client.put_object(Bucket=name, Key=f"shop/drops/{drop_id}/images/a.jpg", Body=b"x")
    client.put_object(Bucket=name, Key="shop/drops/2026-11-01/_SUCCESS", Body=b"")
    listing = S3DropListing(client, f"s3://{name}/shop")

    assert listing.drop_ids_after(None) == ["2026-11-01", "2026-11-01b", "2026-11-02"]
    assert listing.drop_ids_after("2026-11-01") == ["2026-11-01b", "2026-11-02"]
    first = discover_drops(listing, DiscoveryCursor())
    assert first.ready == ["2026-11-01"]
    assert first.cursor.pending == ("2026-11-01b", "2026-11-02")

    client.put_object(Bucket=name, Key="shop/drops/2026-11-02/_SUCCESS", Body=b"")
    assert discover_drops(listing, first.cursor).ready == ["2026-11-02"]


def test_a_drop_folder_lists_its_files_and_completeness_follows_the_marker(tmp_path):
    _drop(tmp_path, "2026-11-01", complete=False)
    listing = FolderDropListing(str(tmp_path))
    assert listing.files("2026-11-01") == {"captions.csv"}
    assert not listing.is_complete("2026-11-01")
    (tmp_path / "drops" / "2026-11-01" / "_SUCCESS").write_text("")
    assert listing.files("2026-11-01") == {"captions.csv", "_SUCCESS"} and listing.is_complete("2026-11-01")
    assert listing.files("no-such-drop") == set()


DROPS_AT_SCALE = 2_000


@pytest.mark.slow  # 4,000 objects on moto's server
def test_s3_ticks_over_2000_drops_page_through_the_listing_and_an_idle_tick_is_fast(bucket):
    client, name = bucket
    drop_ids = [f"2026-{n:05d}" for n in range(DROPS_AT_SCALE)]
    for drop_id in drop_ids:
        client.put_object(Bucket=name, Key=f"shop/drops/{drop_id}/captions.csv", Body=b"image_path#description\n")
        client.put_object(Bucket=name, Key=f"shop/drops/{drop_id}/_SUCCESS", Body=b"")
    listing = S3DropListing(client, f"s3://{name}/shop")

    started = time.perf_counter()
    first = discover_drops(listing, DiscoveryCursor())
    first_s = time.perf_counter() - started
    assert first.ready == drop_ids  # past the 1,000 prefixes of one ListObjectsV2 page
    started = time.perf_counter()
    idle = discover_drops(listing, first.cursor)
    idle_s = time.perf_counter() - started
    print(f"{DROPS_AT_SCALE} drops on moto: first tick {first_s:.2f}s, idle tick {idle_s * 1000:.0f} ms")
    assert idle.ready == [] and idle_s < 1.0
