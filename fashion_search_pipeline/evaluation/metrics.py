"""Rank-based retrieval metrics (MRR, recall@k, nDCG@k, median rank), BEIR / trec_eval style.

Retrieval is evaluated over full rankings: every candidate is scored for every
query, so every relevant item has a rank.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

# Upper bound on the number of score cells compared at once in ranks_from_scores.
_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True)
class RetrievalMetrics:
    """Means over the evaluated queries; every value is None when no query was evaluated.

    `queries` counts the evaluated queries, `skipped` those without any relevant
    item (excluded from the means).
    """

    mrr: float | None
    recall: dict[int, float | None]
    ndcg: float | None
    ndcg_k: int
    median_rank: float | None
    queries: int
    skipped: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat mapping for reports: mrr, recall@<k>..., ndcg@<k>, median_rank, queries, skipped."""
        flat: dict[str, float | int | None] = {"mrr": self.mrr}
        flat.update({f"recall@{k}": value for k, value in self.recall.items()})
        flat[f"ndcg@{self.ndcg_k}"] = self.ndcg
        flat["median_rank"] = self.median_rank
        flat["queries"] = self.queries
        flat["skipped"] = self.skipped
        return flat


def ranks_from_scores(scores: np.ndarray, relevant: Sequence[Collection[int]]) -> list[np.ndarray]:
    """The 1-based ranks (ascending, int64) of each query's relevant candidates.

    `scores[i, j]` is how well candidate j matches query i (higher is better);
    `relevant[i]` holds the candidate indices relevant to query i. The ranking is
    by score descending, ties broken by lower candidate index, so a candidate's
    rank is 1 + the number of candidates that beat it. Ranks are counted, not
    sorted: O(queries x candidates) time, memory bounded by processing blocks.
    A query with no relevant candidate gets an empty array.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries, candidates) matrix, got shape {scores.shape}")
    n_queries, n_candidates = scores.shape
    if len(relevant) != n_queries:
        raise ValueError(f"relevant has {len(relevant)} entries but scores has {n_queries} queries")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")

    per_query = [_relevant_indices(query, items, n_candidates) for query, items in enumerate(relevant)]
    counts = np.array([len(items) for items in per_query], dtype=np.int64)
    pair_query = np.repeat(np.arange(n_queries), counts)
    pair_item = np.concatenate(per_query) if per_query else np.empty(0, dtype=np.int64)
    ranks = np.empty(len(pair_item), dtype=np.int64)

    positions = np.arange(n_candidates)
    block = max(1, _BLOCK_CELLS // max(1, n_candidates))
    for start in range(0, len(pair_item), block):
        queries = pair_query[start : start + block]
        items = pair_item[start : start + block]
        rows = scores[queries]
        own = rows[np.arange(len(items)), items][:, None]
        higher = np.count_nonzero(rows > own, axis=1)
        tied_before = np.count_nonzero((rows == own) & (positions < items[:, None]), axis=1)
        ranks[start : start + block] = higher + tied_before + 1

    split = np.split(ranks, np.cumsum(counts)[:-1]) if n_queries else []
    return [np.sort(query_ranks) for query_ranks in split]


def _relevant_indices(query: int, items: Collection[int], n_candidates: int) -> np.ndarray:
    indices = np.unique(np.asarray(list(items), dtype=np.int64))
    if indices.size and (indices[0] < 0 or indices[-1] >= n_candidates):
        raise ValueError(
            f"query {query}: relevant indices must lie in [0, {n_candidates}), got {indices.tolist()}"
        )
    return indices


def compute_metrics(
    ranks: Sequence[np.ndarray], ks: Sequence[int] = (1, 5, 10), ndcg_k: int = 10
) -> RetrievalMetrics:
    """Mean retrieval metrics from each query's relevant-item ranks (as from ranks_from_scores).

    - MRR: mean of 1 / rank of the first relevant item.
    - recall@k: |relevant items ranked <= k| / |relevant items| (BEIR); with one
      relevant item per query this is hit@k.
    - nDCG@k: binary relevance, DCG = sum over relevant items ranked <= k of
      1 / log2(rank + 1), divided by the DCG of the ideal ranking (min(|relevant|, k)
      relevant items on top).
    - median_rank: median of the first-relevant ranks.
    Queries with no relevant item are skipped and counted.
    """
    ks = _positive_ints("ks", ks)
    (ndcg_k,) = _positive_ints("ndcg_k", [ndcg_k])
    evaluated = [_checked_ranks(query, query_ranks) for query, query_ranks in enumerate(ranks)]
    evaluated = [query_ranks for query_ranks in evaluated if query_ranks.size]
    skipped = len(ranks) - len(evaluated)
    if not evaluated:
        return RetrievalMetrics(
            mrr=None,
            recall={k: None for k in ks},
            ndcg=None,
            ndcg_k=ndcg_k,
            median_rank=None,
            queries=0,
            skipped=skipped,
        )

    first = np.array([query_ranks.min() for query_ranks in evaluated], dtype=np.float64)
    recall = {
        k: float(np.mean([np.count_nonzero(r <= k) / r.size for r in evaluated])) for k in ks
    }
    discounts = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
    ndcg = [
        (1.0 / np.log2(r[r <= ndcg_k] + 1.0)).sum() / discounts[: min(r.size, ndcg_k)].sum()
        for r in evaluated
    ]
    return RetrievalMetrics(
        mrr=float(np.mean(1.0 / first)),
        recall=recall,
        ndcg=float(np.mean(ndcg)),
        ndcg_k=ndcg_k,
        median_rank=float(np.median(first)),
        queries=len(evaluated),
        skipped=skipped,
    )


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    checked = [int(v) for v in values]
    if not checked or min(checked) < 1 or len(set(checked)) != len(checked):
        raise ValueError(f"{name} must be distinct positive integers, got {list(values)}")
    return checked


def _checked_ranks(query: int, query_ranks: np.ndarray) -> np.ndarray:
    query_ranks = np.asarray(query_ranks)
    if query_ranks.ndim != 1:
        raise ValueError(f"query {query}: ranks must be one-dimensional, got shape {query_ranks.shape}")
    if query_ranks.size and (query_ranks.min() < 1 or np.unique(query_ranks).size != query_ranks.size):
        raise ValueError(f"query {query}: ranks must be distinct and >= 1, got {query_ranks.tolist()}")
    return query_ranks
