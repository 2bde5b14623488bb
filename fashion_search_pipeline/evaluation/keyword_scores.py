"""BM25 scores of the keyword leg for a batch of text queries, read from a model's LanceDB table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fashion_search_pipeline.columns import ITEM_ID, SCORE
from fashion_search_pipeline.store.keyword import keyword_search, table_keyword_columns

if TYPE_CHECKING:
    from lancedb.table import Table


def keyword_score_matrix(
    table: Table, queries: Sequence[str], candidate_ids: Sequence[str], depth: int | None
) -> np.ndarray:
    """(queries, candidates) BM25 of each query's `depth` best keyword hits (None: all of them),
    exactly as CatalogSearch's keyword leg returns them; -inf for a candidate it does not return."""
    position = {item_id: j for j, item_id in enumerate(candidate_ids)}
    scores = np.full((len(queries), len(candidate_ids)), -np.inf)
    columns = table_keyword_columns(table)
    limit = depth if depth is not None else max(len(candidate_ids), 1)
    for row, query in enumerate(queries):
        hits = keyword_search(table, query, limit, columns=columns)
        for item_id, score in zip(hits[ITEM_ID], hits[SCORE]):
            if item_id in position:
                scores[row, position[item_id]] = score
    return scores
