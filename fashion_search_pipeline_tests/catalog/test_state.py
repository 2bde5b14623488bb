from __future__ import annotations

import polars as pl
import pytest

from fashion_search_pipeline.catalog.drops import DropLocation
from fashion_search_pipeline.catalog.state import (
    DeletionsFileError,
    DropChanges,
    apply_drops,
    parse_deletions,
    read_deletions,
)

from .conftest import write_drop


def deletions(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return parse_deletions(data, drop_id="d2", source="drops/d2/deletions.csv")


def items(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows))


def test_deletions_with_commas_skip_blank_and_repeated_ids():
    assert deletions("item_id,reason\r\nsku-1,discontinued\r\n ,\r\nsku-2,recalled\r\nsku-1,again\r\n") == [
        "sku-1",
        "sku-2",
    ]


def test_deletions_with_hashes_and_a_single_column():
    assert deletions("reason#Item_ID\nold#sku-3\n") == ["sku-3"]
    assert deletions("item_id\nsku-4\n\nsku-5") == ["sku-4", "sku-5"]


def test_empty_or_header_only_deletions_delete_nothing():
    assert deletions("") == []
    assert deletions("item_id\n") == []


def test_deletions_without_an_item_id_column_name_drop_file_and_column():
    with pytest.raises(DeletionsFileError, match=r"'d2'.*drops/d2/deletions\.csv.*'item_id'"):
        deletions("sku,reason\nsku-1,gone\n")


@pytest.mark.parametrize("bad", [b"item_id,reason\nsku-1\n", b"item_id\nsku-\xff\n"])
def test_a_broken_deletion_record_is_an_error_naming_its_line(bad):
    with pytest.raises(DeletionsFileError, match="deletions.csv line 2"):
        deletions(bad)


def test_read_deletions_of_a_drop_without_a_file_is_empty(tmp_path):
    drop = write_drop(tmp_path, "d1", "image_path#description\n")
    assert read_deletions(drop) == []


def test_read_deletions_reads_the_drop_file(tmp_path):
    drop = write_drop(tmp_path, "d2", "image_path#description\n", {"deletions.csv": b"item_id\nsku-9\n"})
    assert read_deletions(drop) == ["sku-9"]
    assert read_deletions(DropLocation(str(tmp_path), "d2")) == ["sku-9"]


def test_drops_apply_in_drop_id_order_with_deletes_then_upserts():
    first = DropChanges(
        "2026-11-01",
        items(
            {"item_id": "a", "description": "A v1", "colour": "Red"},
            {"item_id": "b", "description": "B v1", "colour": "Blue"},
            {"item_id": "c", "description": "C v1", "colour": "Green"},
        ),
        (),
    )
    second = DropChanges(
        "2026-11-08",
        items(
            {"item_id": "b", "description": "B v2", "gender": "Women"},
            {"item_id": "d", "description": "D v1", "gender": "Men"},
            {"item_id": "c", "description": "C v2", "gender": "Men"},
        ),
        ("a", "c", "never-existed"),
    )

    catalog = apply_drops([second, first])  # given out of order

    assert catalog["item_id"].to_list() == ["b", "c", "d"]
    assert catalog["description"].to_list() == ["B v2", "C v2", "D v1"]
    assert catalog["colour"].to_list() == [None, None, None]  # replaced rows take the new drop's columns
    assert catalog["gender"].to_list() == ["Women", "Men", "Men"]
    assert catalog.schema["colour"] == pl.Utf8


def test_attribute_columns_missing_in_a_drop_are_null():
    first = DropChanges("1", items({"item_id": "a", "description": "A", "colour": "Red"}), ())
    second = DropChanges("2", items({"item_id": "b", "description": "B", "season": "Fall"}), ())
    catalog = apply_drops([first, second])
    assert catalog.select("item_id", "colour", "season").rows() == [("a", "Red", None), ("b", None, "Fall")]


def test_within_a_drop_the_last_row_of_an_item_id_counts():
    change = DropChanges("1", items({"item_id": "a", "description": "old"}, {"item_id": "a", "description": "new"}), ())
    assert apply_drops([change])["description"].to_list() == ["new"]


def test_no_drops_is_an_empty_catalog():
    catalog = apply_drops([])
    assert catalog.height == 0
    assert "item_id" in catalog.columns
