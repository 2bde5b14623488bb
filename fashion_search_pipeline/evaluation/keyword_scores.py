"""BM25 scores of the keyword leg for a batch of text queries, read from a model's LanceDB table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fashion_search_pipeline.columns import ITEM_ID, SCORE
from fashion_search_pipeline.store.keyword import keyword_search

if TYPE_CHECKING:
    from lancedb.table import Table


def keyword_score_matrix(
    table: Table, queries: Sequence[str], candidate_ids: Sequence[str], depth: int | None
) -> np.ndarray:
    """(queries, candidates) BM25 of each query's `depth` best keyword hits among the candidates
    (None: all of them), as CatalogSearch's keyword leg returns them from a catalog of only those
    candidates; -inf for a candidate it does not return.

    When the candidates are fewer than the table's rows (a held-out subset), every hit is read and
    the `depth` best candidates kept (best BM25, ties to the lower item id, as store.fusion ranks
    a leg); BM25 statistics stay those of the whole table.
    """
    position = {item_id: j for j, item_id in enumerate(candidate_ids)}
    scores = np.full((len(queries), len(candidate_ids)), -np.inf)
    rows = table.count_rows()
    whole = len(position) >= rows
    limit = depth if depth is not None and whole else max(rows, len(candidate_ids), 1)
    for row, query in enumerate(queries):
        hits = keyword_search(table, query, limit)
        found = sorted(
            ((-score, item_id) for item_id, score in zip(hits[ITEM_ID], hits[SCORE]) if item_id in position)
        )
        for negative, item_id in found[:depth] if depth is not None else found:
            scores[row, position[item_id]] = -negative
    return scores
