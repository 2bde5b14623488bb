from __future__ import annotations

import boto3
import pytest

from fashion_search_pipeline.catalog.captions import read_captions
from fashion_search_pipeline.catalog.drops import DropLocation, InvalidDropIdError, list_drops, validate_drop_id
from fashion_search_pipeline.catalog.images import build_manifest

from .conftest import image_bytes, truncated_jpeg, write_drop

CAPTIONS = "image_path#description#colour\nimages/a.jpg#Red Shirt#Red\nimages/b.jpg#Broken Shoe#Black\n"


@pytest.mark.parametrize("drop_id", ["2026-11-01", "drop_7", "v1.2", "A", "x" * 64])
def test_valid_drop_ids_come_back_unchanged(drop_id):
    assert validate_drop_id(drop_id) == drop_id


@pytest.mark.parametrize("drop_id", ["", ".hidden", "a,b", "a[1]", "a/b", "a b", "x" * 65, "drop\n", None])
def test_invalid_drop_ids_raise_naming_the_id(drop_id):
    with pytest.raises(InvalidDropIdError, match="invalid drop id"):
        validate_drop_id(drop_id)


def test_drop_location_uris():
    drop = DropLocation("s3://bucket/landing/", "2026-11-01")
    assert drop.uri == "s3://bucket/landing/drops/2026-11-01"
    assert drop.captions_uri == "s3://bucket/landing/drops/2026-11-01/captions.csv"
    assert drop.deletions_uri == "s3://bucket/landing/drops/2026-11-01/deletions.csv"


def test_drop_location_rejects_an_invalid_id():
    with pytest.raises(InvalidDropIdError, match="a,b"):
        DropLocation("/landing", "a,b")


def test_list_drops_finds_complete_drops_in_order(tmp_path):
    write_drop(tmp_path, "2026-11-08", CAPTIONS)
    write_drop(tmp_path, "2026-11-01", CAPTIONS)
    write_drop(tmp_path, "2026-11-15", CAPTIONS, marker=False)  # still landing
    write_drop(tmp_path, "no-captions", None)
    (tmp_path / "drops" / "stray.txt").write_text("not a drop")

    assert list_drops(str(tmp_path)) == ["2026-11-01", "2026-11-08"]
    assert list_drops(str(tmp_path), require_marker=False) == ["2026-11-01", "2026-11-08", "2026-11-15"]


def test_list_drops_skips_folders_that_are_not_valid_drop_ids(tmp_path, caplog):
    write_drop(tmp_path, "good", CAPTIONS)
    bad = tmp_path / "drops" / "bad,name"
    bad.mkdir()
    (bad / "captions.csv").write_text(CAPTIONS)
    (bad / "_SUCCESS").write_text("")

    assert list_drops(str(tmp_path)) == ["good"]
    assert "bad,name" in caplog.text


def test_list_drops_of_a_missing_landing_area_is_empty(tmp_path):
    assert list_drops(str(tmp_path / "nowhere")) == []


def test_a_drop_on_s3_is_listed_read_and_checked(s3_endpoint):
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint["endpoint_url"],
        region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"],
        aws_secret_access_key=s3_endpoint["secret"],
    )
    s3.create_bucket(Bucket="catalog-drops-test")
    objects = {
        "captions.csv": CAPTIONS.encode(),
        "images/a.jpg": image_bytes(),
        "images/b.jpg": truncated_jpeg(),
    }
    for name, data in objects.items():
        s3.put_object(Bucket="catalog-drops-test", Key=f"landing/drops/d1/{name}", Body=data)
    options = {
        "key": s3_endpoint["key"],
        "secret": s3_endpoint["secret"],
        "client_kwargs": {"endpoint_url": s3_endpoint["endpoint_url"], "region_name": s3_endpoint["region"]},
    }
    landing = "s3://catalog-drops-test/landing"

    assert list_drops(landing, options) == []  # no _SUCCESS marker yet
    s3.put_object(Bucket="catalog-drops-test", Key="landing/drops/d1/_SUCCESS", Body=b"")
    assert list_drops(landing, options) == ["d1"]  # the new object is seen: listings are not cached

    drop = DropLocation(landing, "d1")
    captions = read_captions(drop, options)
    assert captions["image_path"].to_list() == ["images/a.jpg", "images/b.jpg"]
    assert captions["colour"].to_list() == ["Red", "Black"]

    manifest = build_manifest(drop, options)
    assert manifest["image_path"].to_list() == ["images/a.jpg", "images/b.jpg"]
    assert manifest["image_uri"].to_list() == [f"{landing}/drops/d1/images/a.jpg", f"{landing}/drops/d1/images/b.jpg"]
    assert manifest["decodable"].to_list() == [True, False]
    assert manifest["bytes"].to_list() == [len(objects["images/a.jpg"]), len(objects["images/b.jpg"])]
