"""Search indexes: the plan by table size, building them, and ANN recall against exact search."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import FTS

from fashion_search_pipeline.columns import ITEM_ID, VECTOR
from fashion_search_pipeline.store import indexes
from fashion_search_pipeline.store.indexes import (
    DEFAULT_MIN_ROWS_FOR_ANN,
    HNSW_SQ,
    IVF_RQ,
    AnnSearchParams,
    ann_search_params,
    ensure_indexes,
    plan_vector_index,
)
from fashion_search_pipeline.store.keyword import keyword_search, keyword_text_indexed
from fashion_search_pipeline.store.tables import connect, upsert_rows
from fashion_search_pipeline_tests.store.test_tables import embedding_rows


def clustered_unit_vectors(n: int, dim: int, *, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres, like embeddings of a catalog of product types."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def vector_table(db, name: str, vectors: np.ndarray):
    n, dim = vectors.shape
    rows = pa.table({
        ITEM_ID: [f"item-{i:05d}" for i in range(n)],
        "description": [f"product number {i}" for i in range(n)],
        VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
    })
    upsert_rows(db, name, rows)
    return db.open_table(name)


def nearest(table, query: np.ndarray, k: int, *, exact: bool):
    """A cosine k-NN query: exhaustive, or through the ANN index with the chosen parameters."""
    search = table.search(query, vector_column_name=VECTOR).distance_type("cosine").limit(k)
    search = search.select([ITEM_ID, "_distance"])
    if exact:
        return search.bypass_vector_index()
    params = ann_search_params(table)
    return search.nprobes(params.nprobes).refine_factor(params.refine_factor_for(k))


def nearest_ids(table, query: np.ndarray, k: int, *, exact: bool) -> list[str]:
    return nearest(table, query, k, exact=exact).to_arrow()[ITEM_ID].to_pylist()


@pytest.fixture
def db(tmp_path):
    return connect(str(tmp_path / "lancedb"))


def test_small_tables_get_exact_search():
    assert plan_vector_index(DEFAULT_MIN_ROWS_FOR_ANN - 1) is None
    assert plan_vector_index(0, min_rows_for_ann=0) is None


def test_mid_sized_tables_get_ivf_hnsw_sq_with_sqrt_partitions():
    plan = plan_vector_index(250_000)
    assert (plan.index_type, plan.num_partitions) == (HNSW_SQ, 500)
    assert plan.config().distance_type == "cosine"


@pytest.mark.parametrize(("rows", "partitions"), [(1_000_000, 123), (4_000_000, 489)])
def test_large_tables_get_ivf_rq_with_partitions_of_about_8k_rows(rows, partitions):
    plan = plan_vector_index(rows)
    assert (plan.index_type, plan.num_partitions) == (IVF_RQ, partitions)
    assert (plan.config().distance_type, plan.config().num_bits) == ("cosine", 4)


def test_ensure_indexes_on_a_small_table_builds_scalar_and_full_text_indexes_only(db):
    upsert_rows(db, "m__text", embedding_rows(["apple", "banana", "cherry"]))
    table = db.open_table("m__text")
    report = ensure_indexes(table)
    assert report["rows"] == 3
    assert (report["item_id_index"], report["keyword_index"], report["keyword_text_filled"]) == ("created", "created", 3)
    assert report["vector_index"] is None
    assert {tuple(index.columns): index.index_type for index in table.list_indices()} == {
        ("item_id",): "BTree",
        ("keyword_text",): "FTS",
    }
    assert ann_search_params(table) is None
    hits = table.search("banana", query_type="fts").limit(5).to_arrow()
    assert hits[ITEM_ID].to_pylist() == ["banana"]


def test_ensure_indexes_again_folds_new_rows_into_the_existing_indexes(db):
    upsert_rows(db, "m__text", embedding_rows(["apple", "banana"]))
    table = db.open_table("m__text")
    ensure_indexes(table)
    assert ensure_indexes(table)["optimized"] is False
    upsert_rows(db, "m__text", embedding_rows(["cherry", "damson"], seed=3))
    table = db.open_table("m__text")
    report = ensure_indexes(table)
    assert (report["item_id_index"], report["keyword_index"], report["optimized"]) == ("present", "present", True)
    assert all(index.num_unindexed_rows == 0 for index in table.list_indices())
    assert table.search("damson", query_type="fts").limit(5).to_arrow()[ITEM_ID].to_pylist() == ["damson"]


def test_ann_index_recall_at_10_matches_exact_search(db):
    vectors = clustered_unit_vectors(12_000, 32)
    table = vector_table(db, "m__image", vectors)
    report = ensure_indexes(table)
    assert (report["vector_index"], report["vector_index_action"]) == (HNSW_SQ, "created")
    assert report["num_partitions"] == 110
    indexes = {tuple(index.columns): index for index in table.list_indices()}
    assert indexes[(VECTOR,)].index_type == "IvfHnswSq"
    assert table.index_stats(indexes[(VECTOR,)].name).distance_type == "cosine"

    queries = clustered_unit_vectors(60, 32, seed=1)
    assert "ANNIvfPartition" in nearest(table, queries[0], 10, exact=False).explain_plan()
    assert "ANNIvfPartition" not in nearest(table, queries[0], 10, exact=True).explain_plan()
    found = sum(
        len(set(nearest_ids(table, query, 10, exact=True)) & set(nearest_ids(table, query, 10, exact=False)))
        for query in queries
    )
    assert found / (10 * len(queries)) >= 0.95
    assert ensure_indexes(table)["vector_index_action"] == "present"


@pytest.mark.slow  # builds two ANN indexes on a large table
def test_deep_searches_re_rank_the_same_candidate_budget_and_never_more_per_result():
    params = AnnSearchParams(nprobes=20, refine_factor=5)
    assert [params.refine_factor_for(limit) for limit in (1, 10, 30, 72, 150, 300, 1000)] == [5, 5, 5, 3, 1, 1, 1]


def test_a_table_outgrowing_ivf_hnsw_sq_is_rebuilt_as_ivf_rq_with_high_recall(db, monkeypatch):
    # Isotropic noise around 40 centres: neighbours barely stand out, the hard case for quantisers.
    vectors = clustered_unit_vectors(20_000, 128)
    table = vector_table(db, "m__image", vectors)
    assert ensure_indexes(table)["vector_index"] == HNSW_SQ
    monkeypatch.setattr(indexes, "IVF_RQ_MIN_ROWS", 15_000)  # a million rows, scaled down
    report = ensure_indexes(table)
    assert (report["vector_index"], report["vector_index_action"], report["num_partitions"]) == (
        IVF_RQ, "rebuilt", 3
    )
    assert {index.index_type for index in table.list_indices() if index.columns == [VECTOR]} == {"IvfRq"}
    assert ann_search_params(table).refine_factor == indexes.REFINE_FACTOR[IVF_RQ]

    queries = clustered_unit_vectors(50, 128, seed=2)
    found = sum(
        len(set(nearest_ids(table, query, 10, exact=True)) & set(nearest_ids(table, query, 10, exact=False)))
        for query in queries
    )
    assert found / (10 * len(queries)) >= 0.95


def test_keyword_text_joins_description_and_attributes_in_one_full_text_index(db):
    rows = embedding_rows(["a", "b"], attributes={"colour": ["Red", None], "article_type": ["Tops", "Caps"]})
    upsert_rows(db, "tiny__text", rows)
    table = db.open_table("tiny__text")
    report = ensure_indexes(table)
    assert (report["keyword_index"], report["keyword_text_filled"]) == ("created", 2)
    texts = dict(zip(*table.to_arrow().select(["item_id", "keyword_text"]).to_pydict().values()))
    assert texts == {"a": "description of a Red Tops", "b": "description of b Caps"}
    assert {tuple(index.columns) for index in table.list_indices() if index.index_type == "FTS"} == {("keyword_text",)}
    again = ensure_indexes(table)
    assert (again["keyword_index"], again["keyword_text_filled"]) == ("present", 0)


def test_a_table_from_before_keyword_text_is_searched_by_columns_until_ensure_indexes_adds_it(db):
    old = embedding_rows(["a", "b"], attributes={"colour": ["Red", "Blue"]})
    table = db.create_table("tiny__text", data=old)  # written before the column existed
    table.create_index("colour", config=FTS())
    table.create_index("description", config=FTS())
    assert keyword_search(table, "blue", 5)["item_id"].to_list() == ["b"]  # the multi-column match
    report = ensure_indexes(table)
    assert (report["keyword_index"], report["keyword_text_filled"]) == ("created", 2)
    assert len(report["keyword_indexes_dropped"]) == 2  # the per-column ones, unused from now on
    assert {tuple(index.columns) for index in table.list_indices() if index.index_type == "FTS"} == {("keyword_text",)}
    assert keyword_text_indexed(table)
    assert keyword_search(table, "blue", 5)["item_id"].to_list() == ["b"]
