from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashion_search_pipeline.catalog.captions import (
    CaptionsFileError,
    MissingColumnError,
    iter_records,
    normalize_column_name,
    parse_captions,
    read_captions,
)
from fashion_search_pipeline.catalog.drops import DropLocation

from .conftest import write_drop


def parse(text: str | bytes) -> pl.DataFrame:
    data = text.encode() if isinstance(text, str) else text
    return parse_captions(data, drop_id="d1", source="drops/d1/captions.csv")


def test_rows_carry_drop_source_row_and_every_column_as_text():
    frame = parse(
        "image_path#description#gender#colour\n"
        "images/1.jpg#Red Tee#Men#Red\n"
        "images/2.jpg#Blue Cap#Women#Blue\n"
    )
    assert frame.columns == [
        "drop_id", "source_row", "item_id", "image_path", "description", "gender", "colour", "parse_error"
    ]
    assert frame.schema["source_row"] == pl.Int64
    assert all(frame.schema[c] == pl.Utf8 for c in frame.columns if c != "source_row")
    assert frame["drop_id"].to_list() == ["d1", "d1"]
    assert frame["source_row"].to_list() == [2, 3]
    assert frame["item_id"].to_list() == [None, None]
    assert frame["description"].to_list() == ["Red Tee", "Blue Cap"]
    assert frame["parse_error"].to_list() == [None, None]


def test_headers_are_normalised_and_reserved_names_prefixed():
    frame = parse(
        " Image_Path #DESCRIPTION#Article Type#Item_ID#status#model\n"
        "images/1.jpg#Tee#Tshirts#sku-1#new#Basic\n"
    )
    assert frame.columns == [
        "drop_id", "source_row", "item_id", "image_path", "description",
        "article_type", "attr_status", "attr_model", "parse_error",
    ]
    assert frame.row(0, named=True)["item_id"] == "sku-1"
    assert frame.row(0, named=True)["attr_status"] == "new"


def test_quoted_values_hold_the_delimiter_quotes_and_newlines_and_rows_count_lines():
    text = (
        "image_path#description#colour\r\n"
        'images/1.jpg#"Tee # ""Ferrari""\r\nEdition"#Red\r\n'
        "images/2.jpg#Cap#Blue\r\n"
    )
    frame = parse(text)
    assert frame["description"].to_list() == ['Tee # "Ferrari"\r\nEdition', "Cap"]
    assert frame["source_row"].to_list() == [2, 4]
    assert frame["parse_error"].to_list() == [None, None]


def test_a_record_with_the_wrong_field_count_is_kept_and_its_neighbours_parse():
    frame = parse("image_path#description#colour\nimages/1.jpg#Tee#Red\nimages/2.jpg#Cap\nimages/3.jpg#Hat#Blue\n")
    assert frame["source_row"].to_list() == [2, 3, 4]
    assert frame["parse_error"].to_list() == [None, "malformed record: expected 3 fields, got 2", None]
    assert frame.row(1, named=True)["image_path"] == "images/2.jpg"
    assert frame.row(1, named=True)["colour"] is None
    assert frame["description"].to_list()[2] == "Hat"


def test_an_unterminated_quote_costs_only_its_own_line():
    frame = parse(
        "image_path#description#colour\n"
        'images/1.jpg#"Tee#Red\n'
        "images/2.jpg#Cap#Blue\n"
        'images/3.jpg#"Hat, quoted"#Green\n'
    )
    assert frame["source_row"].to_list() == [2, 3, 4]
    assert frame["parse_error"].to_list() == ["malformed record: unterminated quote", None, None]
    assert frame["description"].to_list()[1:] == ["Cap", "Hat, quoted"]


def test_a_quote_that_never_closes_at_the_end_of_the_file_is_one_bad_row():
    frame = parse('image_path#description\nimages/1.jpg#Tee\nimages/2.jpg#"Cap')
    assert frame["parse_error"].to_list() == [None, "malformed record: unterminated quote"]


def test_text_after_a_closing_quote_is_malformed():
    frame = parse('image_path#description\nimages/1.jpg#"Tee"shirt\nimages/2.jpg#Cap\n')
    assert frame["parse_error"].to_list() == ["malformed record: text after the closing quote of field 2", None]


def test_a_byte_that_is_not_utf8_costs_only_its_record():
    data = b"image_path#description\nimages/1.jpg#Caf\xe9 Tee\nimages/2.jpg#Caf\xc3\xa9 Cap\n"
    bad_byte = data.index(b"\xe9")
    frame = parse(data)
    assert frame["parse_error"].to_list() == [f"not UTF-8 at byte {bad_byte}", None]
    assert frame["description"].to_list() == ["Caf\ufffd Tee", "Café Cap"]


def test_a_utf8_byte_order_mark_is_ignored():
    frame = parse(b"\xef\xbb\xbfimage_path#description\nimages/1.jpg#Tee\n")
    assert "image_path" in frame.columns
    assert frame["image_path"].to_list() == ["images/1.jpg"]


def test_blank_lines_are_skipped_but_counted():
    frame = parse("image_path#description\n\nimages/1.jpg#Tee\n\n\nimages/2.jpg#Cap\n\n")
    assert frame["source_row"].to_list() == [3, 6]


@pytest.mark.parametrize("missing", ["image_path", "description"])
def test_a_missing_required_column_names_drop_file_and_column(missing):
    header = "#".join(c for c in ["image_path", "description", "colour"] if c != missing)
    with pytest.raises(MissingColumnError) as raised:
        parse(f"{header}\na#b\n")
    message = str(raised.value)
    assert "'d1'" in message and "drops/d1/captions.csv" in message and repr(missing) in message
    assert raised.value.column == missing


def test_duplicate_header_names_are_an_error_naming_both_headers():
    with pytest.raises(CaptionsFileError, match="headers 'Colour' and 'colour' that both become column 'colour'"):
        parse("image_path#description#Colour#colour\n")


def test_non_ascii_headers_keep_their_letters():
    frame = parse("image_path#description#Größe#颜色#尺码#Ｃｏｌｏｕｒ\nimages/1.jpg#Tee#M#红#L#Red\n")
    assert frame.columns[-5:] == ["größe", "颜色", "尺码", "colour", "parse_error"]
    assert frame.row(0, named=True)["颜色"] == "红"


def test_headers_that_still_collide_fail_the_drop_naming_both():
    with pytest.raises(CaptionsFileError, match=r"'d1'.*headers 'colour size' and 'colour-size'"):
        parse("image_path#description#colour size#colour-size\n")


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("_distance", "attr__distance"),
        ("_rowid", "attr__rowid"),
        ("_score", "attr__score"),
        ("_relevance_score", "attr__relevance_score"),
        ("_private", "attr__private"),
        ("vector", "attr_vector"),
        ("Score", "attr_score"),
        ("model_version", "attr_model_version"),
        ("Item_ID", "item_id"),
    ],
)
def test_reserved_column_names_are_renamed_predictably(header, column):
    assert normalize_column_name(header) == column


@pytest.mark.parametrize("text", ["", "image_path#description#colour\n", "image_path#description#colour"])
def test_an_empty_file_or_header_only_gives_zero_rows_with_all_columns(text):
    frame = parse(text)
    assert frame.height == 0
    assert {"drop_id", "source_row", "item_id", "image_path", "description", "parse_error"} <= set(frame.columns)


def test_read_captions_reads_a_drop(tmp_path):
    drop = write_drop(tmp_path, "d1", "image_path#description\nimages/1.jpg#Tee\n")
    frame = read_captions(drop)
    assert frame["drop_id"].to_list() == ["d1"]
    assert frame["image_path"].to_list() == ["images/1.jpg"]


def test_read_captions_of_a_missing_file_names_drop_and_file(tmp_path):
    drop = DropLocation(str(tmp_path), "d9")
    with pytest.raises(CaptionsFileError, match=r"'d9'.*captions\.csv"):
        read_captions(drop)


def test_iter_records_supports_other_delimiters():
    records = list(iter_records(b'item_id,note\n1,"a, b"\n2,c\n', delimiter=","))
    assert [r.fields for r in records] == [["item_id", "note"], ["1", "a, b"], ["2", "c"]]
    assert [r.line for r in records] == [1, 2, 3]


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


cell = st.text(alphabet=st.sampled_from(list('ab #"\n\r\té')), max_size=8)


@settings(max_examples=60, deadline=None, database=None)
@given(rows=st.lists(st.tuples(cell, cell), max_size=5), line_end=st.sampled_from(["\n", "\r\n"]))
def test_quoted_values_round_trip(rows, line_end):
    text = "image_path#description" + line_end
    text += "".join(f"{quote(a)}#{quote(b)}{line_end}" for a, b in rows)
    frame = parse(text)
    assert list(zip(frame["image_path"].to_list(), frame["description"].to_list())) == rows
    assert frame["parse_error"].null_count() == len(rows)
