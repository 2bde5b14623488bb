"""Shopper filters against a real LanceDB table: values are matched literally, names must be attribute columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fashion_search_pipeline.store.filters import (
    MAX_VALUE_CHARS,
    FilterError,
    UnknownFilterAttributeError,
    filter_expression,
)
from fashion_search_pipeline.store.tables import connect

# Values that would change the meaning of a query if they were spliced into SQL.
TRICKY = [
    "it's",
    "' OR 1=1 --",
    "Red' OR colour = 'Blue",
    "back\\slash",
    "back\\",
    "50%",
    "%",
    "_",
    "nul\x00byte",
    "Ünïcödé ✓ 红色",
    '"double"',
    "`tick`",
    ") OR (1=1",
]
PLAIN = ["Red", "Blue", "Men", "Women", ""]
ATTRIBUTES = ["colour", "gender"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """One row per value, with the value in `colour` and a fixed `gender`, plus a random vector."""
    values = TRICKY + PLAIN
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(values), 8)).astype(np.float32)
    rows = pa.table(
        {
            "item_id": [f"item-{index:02d}" for index in range(len(values))],
            "colour": values,
            "gender": ["Women" if index % 2 else "Men" for index in range(len(values))],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
        }
    )
    db = connect(str(tmp_path_factory.mktemp("filters") / "lancedb"))
    return db.create_table("items", data=rows)


def matching_ids(table, filters) -> set[str]:
    where = filter_expression(filters, ATTRIBUTES)
    plain = set(table.search().where(where).select(["item_id"]).limit(None).to_arrow()["item_id"].to_pylist())
    vector = np.ones(8, dtype=np.float32)
    nearest = table.search(vector, vector_column_name="vector").where(where, prefilter=True).limit(100)
    assert set(nearest.select(["item_id"]).to_arrow()["item_id"].to_pylist()) == plain
    return plain


def rows(table) -> list[dict]:
    return table.to_arrow().select(["item_id", "colour", "gender"]).to_pylist()


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_a_tricky_value_matches_exactly_the_rows_holding_it(table, value):
    expected = {row["item_id"] for row in rows(table) if row["colour"] == value}
    assert len(expected) == 1
    assert matching_ids(table, {"colour": value}) == expected


def test_a_value_that_no_row_holds_matches_nothing(table):
    assert matching_ids(table, {"colour": "' OR '1'='1"}) == set()
    assert matching_ids(table, {"colour": "red"}) == set()  # case matters: values are literal


def test_a_list_is_alternatives_and_attributes_combine_with_and(table):
    chosen = ["' OR 1=1 --", "50%", "Red"]
    expected = {row["item_id"] for row in rows(table) if row["colour"] in chosen and row["gender"] == "Women"}
    assert expected
    assert matching_ids(table, {"colour": chosen, "gender": "Women"}) == expected
    assert matching_ids(table, {"colour": chosen}) == {row["item_id"] for row in rows(table) if row["colour"] in chosen}


def test_no_filter_is_no_expression():
    assert filter_expression(None, ATTRIBUTES) is None
    assert filter_expression({}, ATTRIBUTES) is None


@pytest.mark.parametrize(
    "name", ["season", "colour = 'Red' OR 1=1 --", "item_id", "vector", "colour;", "Colour"], ids=repr
)
def test_names_must_be_attribute_columns_and_the_error_lists_them(name):
    with pytest.raises(UnknownFilterAttributeError, match=r"filterable attributes: \['colour', 'gender'\]") as raised:
        filter_expression({name: "x"}, ATTRIBUTES)
    assert raised.value.unknown == [name]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"colour": []}, "empty list"),
        ({"colour": 3}, "must be strings"),
        ({"colour": ["Red", None]}, "must be strings"),
        ({"colour": {"$ne": "Red"}}, "must be strings"),
        ({"colour": "x" * (MAX_VALUE_CHARS + 1)}, "at most 200"),
        ({"colour": ["v"] * 65}, "at most 64"),
    ],
)
def test_values_that_are_not_short_strings_are_refused(filters, message):
    with pytest.raises(FilterError, match=message):
        filter_expression(filters, ATTRIBUTES)
