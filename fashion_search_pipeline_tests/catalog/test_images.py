from __future__ import annotations

import hashlib

import polars as pl
import pytest

from fashion_search_pipeline.catalog.images import MANIFEST_SCHEMA, ImageCheck, build_manifest, inspect_image

from .conftest import image_bytes, png_declaring, truncated_jpeg, write_drop


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_a_good_image_decodes_with_its_size(image_format):
    assert inspect_image(image_bytes(image_format, size=(20, 10))) == ImageCheck(20, 10, True, None)


def test_zero_bytes_is_an_empty_file():
    assert inspect_image(b"") == ImageCheck(None, None, False, "empty file")


def test_text_is_not_an_image():
    found = inspect_image(b"image_path#description\n")
    assert (found.width, found.height, found.decodable) == (None, None, False)
    assert found.error.startswith("not an image in a supported format (JPEG, PNG")


def test_formats_outside_the_product_photo_set_are_refused():
    found = inspect_image(image_bytes("EPS"))  # Pillow would hand EPS to Ghostscript
    assert not found.decodable and found.error.startswith("not an image")


def test_a_truncated_jpeg_is_undecodable_but_its_size_is_known():
    found = inspect_image(truncated_jpeg())
    assert (found.width, found.height, found.decodable) == (64, 64, False)
    assert "truncated" in found.error


def test_a_huge_declared_size_is_a_decompression_bomb():
    found = inspect_image(png_declaring(9_000, 9_000))  # 81 Mpx: over our 64 Mpx limit
    assert (found.width, found.height, found.decodable) == (9_000, 9_000, False)
    assert found.error.startswith("decompression bomb: 9000x9000")


def test_a_size_pillow_itself_refuses_is_a_decompression_bomb():
    found = inspect_image(png_declaring(30_000, 30_000))
    assert not found.decodable
    assert found.error.startswith("decompression bomb")


def test_the_pixel_limit_is_configurable():
    data = image_bytes("PNG", size=(100, 100))
    assert inspect_image(data, max_pixels=10_000).decodable
    found = inspect_image(data, max_pixels=9_999)
    assert not found.decodable and "exceeds the limit of 9999" in found.error


def test_the_manifest_lists_every_file_with_hash_size_and_decode_result(tmp_path):
    files = {
        "images/good.jpg": image_bytes(size=(30, 20)),
        "images/nested/good.png": image_bytes("PNG", size=(8, 8)),
        "images/truncated.jpg": truncated_jpeg(),
        "images/notes.txt": b"not an image",
        "images/empty.jpg": b"",
        "images/bomb.png": png_declaring(9_000, 9_000),
        "deletions.csv": b"item_id\nx\n",
    }
    drop = write_drop(tmp_path, "d1", "image_path#description\n", files)

    manifest = build_manifest(drop, max_workers=3)

    assert manifest.schema == pl.Schema(MANIFEST_SCHEMA)
    paths = [p for p in sorted(files) if p != "deletions.csv"]
    assert manifest["image_path"].to_list() == paths  # no captions.csv, deletions.csv or _SUCCESS
    rows = {row["image_path"]: row for row in manifest.iter_rows(named=True)}
    for path in paths:
        assert rows[path]["drop_id"] == "d1"
        assert rows[path]["image_uri"] == f"{tmp_path}/drops/d1/{path}"
        assert rows[path]["bytes"] == len(files[path])
        assert rows[path]["sha256"] == hashlib.sha256(files[path]).hexdigest()
    assert {p for p, row in rows.items() if row["decodable"]} == {"images/good.jpg", "images/nested/good.png"}
    assert (rows["images/good.jpg"]["width"], rows["images/good.jpg"]["height"]) == (30, 20)
    assert rows["images/good.jpg"]["error"] is None
    assert rows["images/empty.jpg"]["error"] == "empty file"
    assert rows["images/notes.txt"]["error"].startswith("not an image")
    assert "truncated" in rows["images/truncated.jpg"]["error"]
    assert rows["images/bomb.png"]["error"].startswith("decompression bomb")


def test_the_manifest_does_not_depend_on_the_number_of_workers(tmp_path):
    files = {f"images/{i}.jpg": image_bytes(color=(i, 0, 0)) for i in range(12)}
    drop = write_drop(tmp_path, "d1", "image_path#description\n", files)
    assert build_manifest(drop, max_workers=1).equals(build_manifest(drop, max_workers=4))


def test_an_empty_drop_has_an_empty_manifest(tmp_path):
    drop = write_drop(tmp_path, "empty", "image_path#description\n")
    manifest = build_manifest(drop)
    assert manifest.height == 0
    assert manifest.schema == pl.Schema(MANIFEST_SCHEMA)
