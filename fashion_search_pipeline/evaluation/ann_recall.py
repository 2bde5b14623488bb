"""How well a table's vector search (ANN index, as CatalogSearch queries it) matches exact search.

recall@k of the index against brute force: for sampled queries (rows of the table
itself), the share of the exact top k that the table's search returns. A returned
item whose exact cosine ties the k-th best counts as found, so ties at the cut-off
never count against the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fashion_search_pipeline.columns import ITEM_ID, VECTOR
from fashion_search_pipeline.store.indexes import DISTANCE_COLUMN, ann_search_params, nearest_query, vector_index

if TYPE_CHECKING:
    from lancedb.table import Table

TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class AnnRecall:
    """recall@k of one table's vector search; recall is None for an empty table."""

    table: str
    recall: float | None
    k: int
    queries: int
    rows: int
    index_type: str | None


def ann_recall_at_k(table: Table, *, k: int = 10, queries: int = 100, seed: int = 0) -> AnnRecall:
    """Search `queries` sampled rows' vectors through LanceDB (with the ANN settings
    CatalogSearch uses) and compare each top `k` with the exact cosine top `k`."""
    rows = pl.from_arrow(table.to_arrow().select([ITEM_ID, VECTOR]))
    index = vector_index(table)
    index_type = index.index_type if index is not None else None
    if rows.height == 0:
        return AnnRecall(table.name, None, k, 0, 0, index_type)
    ids = rows[ITEM_ID].to_list()
    position = {item_id: i for i, item_id in enumerate(ids)}
    vectors = rows[VECTOR].to_numpy().astype(np.float64).reshape(rows.height, -1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    wanted = min(k, rows.height)
    sample = np.random.default_rng(seed).choice(rows.height, size=min(queries, rows.height), replace=False)
    params = ann_search_params(table)

    found = 0
    for query in sample:
        exact = vectors @ vectors[query]
        cutoff = np.sort(exact)[-wanted]
        search = nearest_query(table, vectors[query].astype(np.float32), params, wanted)
        hits = search.select([ITEM_ID, DISTANCE_COLUMN]).to_arrow()[ITEM_ID].to_pylist()
        found += sum(1 for item_id in set(hits) if exact[position[item_id]] >= cutoff - TIE_TOLERANCE)
    return AnnRecall(table.name, found / (wanted * len(sample)), k, len(sample), rows.height, index_type)
