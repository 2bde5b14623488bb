"""The keyword leg (BM25 full-text search) on real LanceDB tables indexed by ensure_indexes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fashion_search_pipeline.store.indexes import ensure_indexes
from fashion_search_pipeline.store.item_columns import write_item_columns
from fashion_search_pipeline.store.keyword import keyword_columns, keyword_search, keyword_terms
from fashion_search_pipeline.store.tables import connect, upsert_rows
from fashion_search_pipeline_tests.store.test_tables import embedding_rows

IDS = ["jacket-1", "tee-2", "shoes-3", "pants-4"]
DESCRIPTIONS = ["Puma Men Ferrari Black Fleece Jacket", "Nike Red Tee", "Adidas Running Shoes", "Puma Track Pants"]
ATTRIBUTES = {
    "gender": ["Men", "Women", "Men", "Women"],
    "colour": ["Black", "Red", "White", "Navy Blue"],
    "article_type": ["Jackets", "Tshirts", "Sports Shoes", "Track Pants"],
}


@pytest.fixture
def table(tmp_path):
    db = connect(str(tmp_path / "db"))
    rows = embedding_rows(IDS, attributes=ATTRIBUTES)
    rows = rows.set_column(rows.schema.get_field_index("description"), "description", [DESCRIPTIONS])
    upsert_rows(db, "tiny__text", rows)
    table = db.open_table("tiny__text")
    ensure_indexes(table)
    return db, table


def ids(frame) -> list[str]:
    return frame["item_id"].to_list()


def test_keyword_search_ranks_by_bm25_over_description_and_attributes(table):
    _, text = table
    assert ids(keyword_search(text, "puma jacket", 10))[0] == "jacket-1"
    # "navy" is only in the colour attribute, "sports" only in the article type
    assert ids(keyword_search(text, "navy", 10)) == ["pants-4"]
    assert ids(keyword_search(text, "sports shoes", 10))[0] == "shoes-3"
    hits = keyword_search(text, "puma", 10, select=["description", "colour"])
    assert set(ids(hits)) == {"jacket-1", "pants-4"}
    assert hits.columns == ["item_id", "description", "colour", "score"]
    assert (hits["score"] > 0).all()


def test_keyword_search_honours_the_where_filter(table):
    _, text = table
    assert ids(keyword_search(text, "puma", 10, where="gender = 'Women'")) == ["pants-4"]
    assert ids(keyword_search(text, "puma", 10, where="gender = 'Kids'")) == []


@pytest.mark.parametrize(
    "query", ['"', ":", "*", "(", "-", 'the "(*:-)" of', "the and of", "   ", "AND OR NOT", "title:(x", '"unclosed']
)
def test_syntax_characters_stop_words_and_punctuation_never_raise(table, query):
    _, text = table
    hits = keyword_search(text, query, 10)
    assert hits.columns == ["item_id", "score"]
    assert hits.height == 0 or query in ("AND OR NOT", "title:(x", '"unclosed')


def test_terms_keep_words_and_drop_syntax_and_stop_words():
    assert keyword_terms('Puma "black" (jacket) -red title:x*') == "puma black jacket red title x"
    assert keyword_terms("the of and ...") is None
    assert keyword_terms("?!") is None


def test_keyword_columns_are_description_then_text_attributes():
    names = ["item_id", "drop_id", "description", "attributes", "colour", "vector", "cluster_id", "pattern"]
    types = ["string", "string", "string", "string", "string", "fixed_size_list", "int64", "string"]
    assert keyword_columns(names, types) == ["description", "colour", "pattern"]


def test_rows_written_after_the_index_are_found_by_keyword_after_ensure_indexes(table):
    db, _ = table
    upsert_rows(db, "tiny__text", embedding_rows(["sneaker-9"], attributes={
        "gender": ["Men"], "colour": ["White"], "article_type": ["Casual Shoes"]}, seed=3))
    text = db.open_table("tiny__text")  # as the embeddings step opens it after its upsert
    report = ensure_indexes(text)
    assert report["optimized"] is True
    assert not [index.name for index in text.list_indices() if index.num_unindexed_rows]
    assert ids(keyword_search(text, "casual", 10)) == ["sneaker-9"]


def test_a_zero_shot_tag_written_later_is_found_by_keyword(table):
    db, _ = table
    tags = pa.table({"item_id": ["jacket-1", "tee-2"], "pattern": ["striped", None]})
    write_item_columns(db, ["tiny__text"], tags)
    text = db.open_table("tiny__text")
    keyword_text = dict(zip(*text.to_arrow().select(["item_id", "keyword_text"]).to_pydict().values()))
    assert keyword_text["jacket-1"] == "Puma Men Ferrari Black Fleece Jacket Men Black Jackets striped"
    assert keyword_text["tee-2"] == "Nike Red Tee Women Red Tshirts"
    assert ids(keyword_search(text, "striped", 10)) == ["jacket-1"]  # before any index update, too
    assert ids(keyword_search(text, "nike tee", 10)) == ["tee-2"]
