from __future__ import annotations

import polars as pl
import pytest

from fashion_search_pipeline.catalog.captions import parse_captions, read_captions
from fashion_search_pipeline.catalog.cleaning import (
    CLEANED_COLUMNS,
    REJECT_REASONS,
    UnsafePathError,
    accepted_items,
    clean_captions,
    content_hash,
    normalize_image_path,
    normalize_text,
    reject_counts,
)
from fashion_search_pipeline.catalog.images import build_manifest

from .conftest import image_bytes, png_declaring, truncated_jpeg, write_drop

HEADER = "image_path#description#colour\n"


def clean_drop(tmp_path, captions: str | bytes, files: dict[str, bytes]) -> pl.DataFrame:
    drop = write_drop(tmp_path, "d1", captions, files)
    return clean_captions(read_captions(drop), build_manifest(drop))


def by_row(cleaned: pl.DataFrame) -> dict[int, dict]:
    return {row["source_row"]: row for row in cleaned.iter_rows(named=True)}


def test_normalize_text_composes_unicode_and_collapses_whitespace():
    assert normalize_text("  Cafe\u0301 \t Tee\r\n  Red\u00a0Edition ") == "Café Tee Red Edition"
    assert normalize_text(None) == ""
    assert normalize_text(" \n ") == ""


def test_content_hash_depends_on_both_parts_unambiguously():
    image = "ab" * 32
    assert content_hash(image, "Red Tee") == content_hash(image, "Red Tee")
    assert len(content_hash(image, "Red Tee")) == 64
    assert content_hash(image, "Red Tee") != content_hash(image, "Red Te")
    assert content_hash(image, "Red Tee") != content_hash("cd" * 32, "Red Tee")
    assert content_hash("a", "bc") != content_hash("ab", "c")


@pytest.mark.parametrize(
    "path, expected",
    [("images/1.jpg", "images/1.jpg"), (" ./images//1.jpg ", "images/1.jpg"), ("1.jpg", "1.jpg"), ("", "")],
)
def test_safe_image_paths_are_normalised(path, expected):
    assert normalize_image_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "../secret.jpg",
        "images/../../secret.jpg",
        "/etc/passwd",
        "~/photo.jpg",
        "C:/images/1.jpg",
        "c:images/1.jpg",
        "images\\..\\..\\secret.jpg",
        "s3://other-bucket/1.jpg",
        "images/1.jpg\x00.png",
    ],
)
def test_unsafe_image_paths_are_refused(path):
    with pytest.raises(UnsafePathError):
        normalize_image_path(path)


def test_every_bad_row_is_rejected_with_its_reason_and_good_rows_are_accepted(tmp_path):
    good = image_bytes()
    captions = (
        HEADER
        + "images/good.jpg#  Red   Tee #Red\n"  # 2 accepted
        + "images/absent.jpg#Blue Cap#Blue\n"  # 3 missing_image
        + "images/truncated.jpg#Hat#Black\n"  # 4 undecodable_image
        + "images/notes.txt#Scarf#Grey\n"  # 5 undecodable_image (not an image)
        + "images/empty.jpg#Sock#White\n"  # 6 undecodable_image (zero bytes)
        + "images/bomb.png#Belt#Brown\n"  # 7 undecodable_image (decompression bomb)
        + "../good.jpg#Escape#Red\n"  # 8 unsafe_path
        + "/etc/passwd#Absolute#Red\n"  # 9 unsafe_path
        + "images/other.jpg#   #Green\n"  # 10 empty_description
        + "#No Path#Green\n"  # 11 missing_image_path
        + "images/other.jpg#Green#Bag#extra\n"  # 12 malformed_row
        + "images/other.jpg#Green Bag#Green\n"  # 13 accepted
    )
    files = {
        "images/good.jpg": good,
        "images/other.jpg": image_bytes(color=(0, 200, 0)),
        "images/truncated.jpg": truncated_jpeg(),
        "images/notes.txt": b"hello",
        "images/empty.jpg": b"",
        "images/bomb.png": png_declaring(9_000, 9_000),
    }
    cleaned = clean_drop(tmp_path, captions, files)
    rows = by_row(cleaned)

    assert cleaned.columns == [*CLEANED_COLUMNS, "colour"]
    assert cleaned.height == 12
    expected = {
        2: None,
        3: "missing_image",
        4: "undecodable_image",
        5: "undecodable_image",
        6: "undecodable_image",
        7: "undecodable_image",
        8: "unsafe_path",
        9: "unsafe_path",
        10: "empty_description",
        11: "missing_image_path",
        12: "malformed_row",
        13: None,
    }
    assert {n: row["reject_reason"] for n, row in rows.items()} == expected
    assert {n: row["status"] for n, row in rows.items()} == {
        n: "accepted" if reason is None else "rejected" for n, reason in expected.items()
    }
    assert "truncated" in rows[4]["reject_detail"]
    assert rows[6]["reject_detail"] == "empty file"
    assert rows[7]["reject_detail"].startswith("decompression bomb")
    assert rows[8]["image_path"] == "../good.jpg"
    assert rows[12]["reject_detail"] == "malformed record: expected 3 fields, got 4"

    accepted = rows[2]
    assert accepted["item_id"] == "good"
    assert accepted["description"] == "Red Tee"
    assert accepted["image_uri"] == f"{tmp_path}/drops/d1/images/good.jpg"
    assert accepted["content_hash"] == content_hash(accepted["image_sha256"], "Red Tee")
    assert reject_counts(cleaned) == {
        "malformed_row": 1,
        "missing_image_path": 1,
        "unsafe_path": 2,
        "missing_image": 1,
        "undecodable_image": 4,
        "empty_description": 1,
        "duplicate_item_id": 0,
    }


def test_the_last_record_of_an_item_id_wins(tmp_path):
    captions = (
        "item_id#image_path#description\n"
        "sku-1#images/a.jpg#First\n"
        "sku-2#images/b.jpg#Other\n"
        "sku-1#images/b.jpg#Second\n"
        "sku-1#images/b.jpg#Third\n"
        "sku-1#images/missing.jpg#Not a contender\n"
    )
    files = {"images/a.jpg": image_bytes(), "images/b.jpg": image_bytes(color=(0, 0, 255))}
    rows = by_row(clean_drop(tmp_path, captions, files))

    assert rows[5]["status"] == "accepted" and rows[5]["description"] == "Third"
    assert rows[3]["status"] == "accepted"
    for superseded in (2, 4):
        assert rows[superseded]["reject_reason"] == "duplicate_item_id"
        assert rows[superseded]["reject_detail"] == "superseded by row 5"
    assert rows[6]["reject_reason"] == "missing_image"


def test_duplicate_stems_collide_as_item_ids(tmp_path):
    captions = "image_path#description\nimages/1.jpg#Tee\nalt/1.jpg#Tee again\n"
    files = {"images/1.jpg": image_bytes(), "alt/1.jpg": image_bytes(color=(1, 2, 3))}
    rows = by_row(clean_drop(tmp_path, captions, files))
    assert rows[2]["reject_reason"] == "duplicate_item_id"
    assert rows[3]["item_id"] == "1" and rows[3]["status"] == "accepted"


def test_attributes_are_normalised_and_blank_ones_are_null(tmp_path):
    captions = 'image_path#description#colour#usage\nimages/1.jpg#Tee#"  Navy \n Blue "#\n'
    cleaned = clean_drop(tmp_path, captions, {"images/1.jpg": image_bytes()})
    assert cleaned.row(0, named=True)["colour"] == "Navy Blue"
    assert cleaned.row(0, named=True)["usage"] is None
    assert cleaned.schema["usage"] == pl.Utf8


def test_accepted_items_keeps_only_accepted_rows_without_cleaning_columns(tmp_path):
    captions = HEADER + "images/1.jpg#Tee#Red\nimages/2.jpg#Cap#Blue\n"
    cleaned = clean_drop(tmp_path, captions, {"images/1.jpg": image_bytes()})
    items = accepted_items(cleaned)
    assert items["item_id"].to_list() == ["1"]
    assert not {"status", "reject_reason", "reject_detail"} & set(items.columns)
    assert {"item_id", "image_uri", "description", "content_hash", "colour"} <= set(items.columns)


def test_a_header_only_drop_without_images_cleans_to_zero_rows(tmp_path):
    cleaned = clean_drop(tmp_path, HEADER, {})
    assert cleaned.height == 0
    assert cleaned.columns == [*CLEANED_COLUMNS, "colour"]
    assert accepted_items(cleaned).height == 0
    assert reject_counts(cleaned) == dict.fromkeys(REJECT_REASONS, 0)


def test_clean_captions_joins_on_composed_unicode_paths():
    raw = parse_captions("image_path#description\nimages/cafe\u0301.jpg#Tee\n".encode(), drop_id="d1", source="c")
    manifest = pl.DataFrame(
        {
            "drop_id": ["d1"],
            "image_path": ["images/caf\u00e9.jpg"],
            "image_uri": ["/x/images/caf\u00e9.jpg"],
            "bytes": [1],
            "sha256": ["00" * 32],
            "width": [1],
            "height": [1],
            "decodable": [True],
            "error": [None],
        }
    )
    cleaned = clean_captions(raw, manifest)
    assert cleaned["status"].to_list() == ["accepted"]
    assert cleaned["image_uri"].to_list() == ["/x/images/caf\u00e9.jpg"]


def test_the_real_first_drop_is_accepted_whole(real_first_drop):
    raw = read_captions(real_first_drop)
    manifest = build_manifest(real_first_drop)
    cleaned = clean_captions(raw, manifest)

    assert raw.height > 300
    assert raw["parse_error"].null_count() == raw.height
    assert manifest["decodable"].all()
    assert cleaned["status"].to_list() == ["accepted"] * raw.height
    items = accepted_items(cleaned)
    assert {"gender", "category", "article_type", "colour", "season", "usage"} <= set(items.columns)
    assert items["item_id"].n_unique() == items.height
    assert items["description"].str.len_chars().min() > 0
