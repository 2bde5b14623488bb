"""recall@10 of a real LanceDB table's vector search against exact search, with and without ANN indexes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import IvfPq

from fashion_search_pipeline.evaluation.ann_recall import ann_recall_at_k
from fashion_search_pipeline.store.indexes import ensure_indexes
from fashion_search_pipeline.store.tables import connect, delete_items, embedding_schema, upsert_rows

TEXT_COLUMNS = (
    "item_id", "drop_id", "image_uri", "description", "content_hash", "model", "model_version", "attributes"
)


def random_table(db, name: str, n: int, dim: int, *, seed: int = 0, repeat_first: int = 0):
    """A table of `n` random unit vectors; the first `repeat_first` rows share one vector (exact ties)."""
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    vectors[:repeat_first] = vectors[0]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    columns = {column: [f"{column}-{i:04d}" for i in range(n)] for column in TEXT_COLUMNS}
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
    upsert_rows(db, name, pa.table(columns, schema=embedding_schema(dim, [])))
    return db.open_table(name)


@pytest.fixture
def db(tmp_path):
    return connect(str(tmp_path / "lancedb"))


def test_exact_scan_finds_the_exact_top_10_even_with_ties(db):
    table = random_table(db, "m__image", 300, 32, repeat_first=15)
    recall = ann_recall_at_k(table, queries=40)
    assert (recall.recall, recall.queries, recall.rows, recall.index_type) == (1.0, 40, 300, None)


def test_an_index_built_by_ensure_indexes_keeps_recall_high(db):
    table = random_table(db, "m__image", 600, 64)
    assert ensure_indexes(table, min_rows_for_ann=100)["vector_index"] == "IVF_HNSW_SQ"
    recall = ann_recall_at_k(table, queries=50)
    assert recall.index_type is not None
    assert recall.recall >= 0.95


def test_a_coarse_index_misses_neighbours(db):
    table = random_table(db, "m__image", 1000, 128, seed=1)
    table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=400, num_sub_vectors=8))
    recall = ann_recall_at_k(table, queries=60)
    assert recall.recall < 0.95


def test_an_empty_table_has_no_recall(db):
    random_table(db, "m__text", 5, 8)
    delete_items(db, "m__text", [f"item_id-{i:04d}" for i in range(5)])
    recall = ann_recall_at_k(db.open_table("m__text"))
    assert (recall.recall, recall.queries, recall.rows) == (None, 0, 0)
