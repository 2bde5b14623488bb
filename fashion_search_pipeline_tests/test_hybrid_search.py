"""CatalogSearch's keyword leg, hybrid strategies and variant collapse, on real LanceDB tables
embedded by a tiny random-weight CLIP (the fixtures of test_search)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fashion_search_pipeline.columns import ITEM_ID, MATCHED, RANK
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE, VARIANTS
from fashion_search_pipeline.store.indexes import ensure_indexes
from fashion_search_pipeline.store.item_columns import write_item_columns
from fashion_search_pipeline.store.tables import connect, table_name
from fashion_search_pipeline_tests.test_search import ITEMS, MODEL, catalog  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def search(catalog):  # noqa: F811
    db = connect(catalog["db_uri"])
    for modality in ("image", "text"):
        ensure_indexes(db.open_table(table_name(MODEL, modality)))
    with CatalogSearch(catalog["db_uri"], registry={MODEL: catalog["spec"]}) as catalog_search:
        yield catalog_search


def test_keyword_fusion_finds_the_words_a_random_model_cannot(search):
    hits = search.text("wool scarf", fusion="keyword")
    assert hits[ITEM_ID].to_list() == ["scarf-05"]
    assert hits[MATCHED].to_list() == ["keyword"]


@pytest.mark.parametrize("strategy", ["hybrid", "hybrid_rrf"])
def test_hybrid_puts_the_keyword_match_first_and_keeps_the_vector_hits(search, strategy):
    hits = search.text("canvas tote bag", k=len(ITEMS), fusion=strategy)
    assert hits[ITEM_ID][0] == "bag-07"
    assert "keyword" in hits[MATCHED][0]
    assert hits.height == len(ITEMS)  # the vector legs still return every product


def test_the_keyword_leg_honours_where(search):
    hits = search.text("heels", fusion="keyword", where="gender = 'Men'")
    assert hits.height == 0
    hits = search.text("heels", fusion="hybrid", where="gender = 'Men'")
    assert set(hits["gender"]) == {"Men"}


@pytest.mark.parametrize("query", ['"', ":(", "*", "-", "the of and", '"black" (heels) -:*'])
def test_syntax_characters_and_stop_words_fall_back_to_the_vector_legs(search, query):
    hybrid = search.text(query, k=5, fusion="hybrid")
    assert hybrid[ITEM_ID].to_list()[: (1 if "heels" in query else 5)] == (
        ["heels-03"] if "heels" in query else search.text(query, k=5, fusion="rrf")[ITEM_ID].to_list()
    )


def test_keyword_fusion_needs_a_text_query(search, catalog):  # noqa: F811
    with pytest.raises(ValueError, match="needs a text query"):
        search.image(catalog["photos"]["cap-04"], fusion="keyword")


def test_image_queries_with_hybrid_rank_as_rrf(search, catalog):  # noqa: F811
    photo = catalog["photos"]["jeans-06"]
    hybrid, rrf = search.image(photo, fusion="hybrid"), search.image(photo, fusion="rrf")
    assert hybrid[ITEM_ID].to_list() == rrf[ITEM_ID].to_list()


def test_collapse_keeps_the_best_row_of_each_cluster_and_counts_its_variants(search, catalog):  # noqa: F811
    db = connect(catalog["db_uri"])
    clusters = pa.table({
        ITEM_ID: [item[0] for item in ITEMS],
        CLUSTER_ID: pa.array([1, 1, 1, 2, 3, 4, 5, 5], pa.int64()),
        CLUSTER_SIZE: pa.array([3, 3, 3, 1, 1, 1, 2, 2], pa.int64()),
    })
    updated = write_item_columns(db, [table_name(MODEL, m) for m in ("image", "text")], clusters)
    assert set(updated.values()) == {len(ITEMS)}
    with CatalogSearch(catalog["db_uri"], registry={MODEL: catalog["spec"]}) as fresh:
        full = fresh.text("summer dress", k=len(ITEMS))
        collapsed = fresh.text("summer dress", k=len(ITEMS), collapse=True)
    assert collapsed.height == 5
    assert collapsed[CLUSTER_ID].n_unique() == 5
    assert collapsed[RANK].to_list() == [1, 2, 3, 4, 5]
    first_of_cluster = full.unique(CLUSTER_ID, keep="first", maintain_order=True)[ITEM_ID].to_list()
    assert collapsed[ITEM_ID].to_list() == first_of_cluster
    sizes = dict(zip(collapsed[CLUSTER_ID], collapsed[VARIANTS]))
    assert sizes == {1: 2, 2: 0, 3: 0, 4: 0, 5: 1}
