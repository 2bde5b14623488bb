"""Fusion of per-modality search results into one ranked row per item.

Each input frame holds one modality's hits: item_id, score (cosine similarity,
higher is better) and payload columns (image_uri, description, attributes...).
Within a modality an item is ranked by score, ties broken by item_id, so every
strategy is deterministic; fused ties are broken by item_id as well.

Strategies:
  raw       best raw cosine of the item over the modalities
  rrf       reciprocal-rank fusion: sum over modalities of w / (60 + rank)
  weighted  weighted mean cosine; a modality that did not return the item counts
            as its lowest returned score ("min", an upper bound on the missing
            similarity) or 0 ("zero")
  image     the image table's hits only
  text      the text table's hits only
  keyword   the keyword leg's hits only (BM25 over description and attributes, store.keyword)
  hybrid    (the default) keyword + vector: the "raw" score of the vector legs (an item only the keyword leg
            found counts the lowest), min-max scaled to [0, 1] over the fused items, plus BM25
            scaled by the best BM25 of the query (0 when the keyword leg missed the item), mixed
            by the share of the legs' weights (HYBRID_WEIGHTS: vector legs together against
            keyword); without keyword hits (a photo, a query of stop words) it ranks exactly as
            "rrf", the better vector fusion for photos
  hybrid_rrf  reciprocal-rank fusion over the image, text and keyword legs (HYBRID_WEIGHTS);
            without keyword hits it ranks exactly as "rrf"

The keyword leg is used by "keyword", "hybrid" and "hybrid_rrf" only; the other strategies
ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from fashion_search_pipeline.columns import ITEM_ID, MATCHED, MODALITIES, RANK, SCORE
from fashion_search_pipeline.store.keyword import KEYWORD

STRATEGIES = ("raw", "rrf", "weighted", "image", "text", "keyword", "hybrid", "hybrid_rrf")
# Strategies that use the keyword leg, and the legs a strategy of one leg reads.
KEYWORD_STRATEGIES = ("keyword", "hybrid", "hybrid_rrf")
SINGLE_LEG_STRATEGIES = (*MODALITIES, KEYWORD)
LEGS = (*MODALITIES, KEYWORD)
# Weights of the legs in "hybrid" and "hybrid_rrf" (in "hybrid" the vector legs' sum is their
# share against the keyword leg's: 1/5 here). Chosen on the shopper-query task of the shared fashion
# catalog with a trained domain-clip, on the half of the queries not used to report (`python -m
# benchmarks.hybrid_weights`): keyword weight 2 0.668, 4 0.718, 6 0.752, 8 0.757, 12 0.753,
# 16 0.751 MRR on that half (docs/search-quality.md).
HYBRID_WEIGHTS = {"image": 1.0, "text": 1.0, KEYWORD: 8.0}
HYBRID_DECIMALS = 12
# CatalogSearch's fusion for a model no retrieval evaluation has chosen one for (see
# store.fusion_choices). "hybrid": with the trained domain-clip on the shared fashion catalog it
# beat every vector fusion on what shoppers type (shopper MRR 0.763 against 0.438 for the best,
# raw; BM25 alone 0.760). It ranks image queries exactly as rrf, the best vector fusion there on
# held-out items (MRR 0.575 against 0.503 for raw) and in-sample (0.758 against 0.729); on the
# weighted task mix it scored 0.782 against 0.576 for weighted (docs/search-quality.md).
DEFAULT_STRATEGY = "hybrid"
RRF_K = 60
MISSING_SCORES = ("min", "zero")
# Hits CatalogSearch fetches per table for each result wanted, so fusion sees items ranked a little
# lower too (the retrieval evaluation fuses at the same depth).
CANDIDATES_PER_RESULT = 3


def fuse(
    results: Mapping[str, pl.DataFrame],
    strategy: str = DEFAULT_STRATEGY,
    k: int = 10,
    weights: Mapping[str, float] | None = None,
    *,
    missing: str = "min",
) -> pl.DataFrame:
    """Fuse per-modality hits into the top `k` items: item_id, payload columns,
    score, matched ("image", "text" or "image+text") and rank (1-based).

    `results` maps legs ("image", "text", "keyword") to their hits. `weights` (per leg,
    default equal; HYBRID_WEIGHTS for the hybrid strategies) apply to "rrf", "weighted" and
    the hybrids; `missing` chooses how "weighted" scores a modality that missed the item.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose one of {STRATEGIES}")
    if missing not in MISSING_SCORES:
        raise ValueError(f"unknown missing-score rule {missing!r}; choose one of {MISSING_SCORES}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if strategy in SINGLE_LEG_STRATEGIES:
        if strategy not in results:
            raise ValueError(f"fusion strategy {strategy!r} needs {strategy} results; got {sorted(results)}")
        results = {strategy: results[strategy]}
    elif strategy not in KEYWORD_STRATEGIES or results.get(KEYWORD) is None or results[KEYWORD].height == 0:
        # No keyword hits (or a strategy that ignores them): the vector legs alone.
        results = {leg: frame for leg, frame in results.items() if leg != KEYWORD}
        strategy = {"hybrid": "rrf", "hybrid_rrf": "rrf"}.get(strategy, strategy)
        if weights is not None:
            weights = {leg: value for leg, value in weights.items() if leg != KEYWORD}
    if not results:
        raise ValueError("no results to fuse")
    modalities = sorted(results, key=_modality_order)
    ranked = {modality: _ranked(modality, results[modality]) for modality in modalities}
    if weights is None and strategy in KEYWORD_STRATEGIES:
        weights = {leg: HYBRID_WEIGHTS[leg] for leg in modalities if leg in HYBRID_WEIGHTS}
    weight = _weights(modalities, weights)

    wide = pl.concat([frame.select(ITEM_ID) for frame in ranked.values()]).unique()
    for modality, frame in ranked.items():
        wide = wide.join(
            frame.select(
                ITEM_ID,
                pl.col(SCORE).alias(_score_column(modality)),
                pl.col(RANK).alias(_rank_column(modality)),
            ),
            on=ITEM_ID,
            how="left",
        )
    fused = wide.with_columns(
        _fused_score(strategy, ranked, weight, missing).alias(SCORE),
        _matched(modalities).alias(MATCHED),
    )
    top = (
        fused.sort([SCORE, ITEM_ID], descending=[True, False], nulls_last=True)
        .head(k)
        .select(ITEM_ID, SCORE, MATCHED)
        .with_row_index(RANK, offset=1)
        .with_columns(pl.col(RANK).cast(pl.Int64))
    )
    payload = _payload(ranked)
    joined = top.join(payload, on=ITEM_ID, how="left")
    payload_columns = [column for column in payload.columns if column != ITEM_ID]
    return joined.select(ITEM_ID, *payload_columns, SCORE, MATCHED, RANK).sort(RANK)


def _modality_order(modality: str) -> tuple[int, str]:
    return (LEGS.index(modality) if modality in LEGS else len(LEGS), modality)


def _ranked(modality: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One row per item (its best score), ranked by score then item_id."""
    missing = [column for column in (ITEM_ID, SCORE) if column not in frame.columns]
    if missing:
        raise ValueError(f"{modality} results lack the columns {missing}")
    clashing = [column for column in (MATCHED, RANK) if column in frame.columns]
    if clashing:
        raise ValueError(f"{modality} results already have the output columns {clashing}")
    return (
        frame.with_columns(pl.col(SCORE).cast(pl.Float64))
        .filter(pl.col(ITEM_ID).is_not_null() & pl.col(SCORE).is_not_nan())
        .sort([SCORE, ITEM_ID], descending=[True, False], nulls_last=True)
        .unique(ITEM_ID, keep="first", maintain_order=True)
        .with_row_index(RANK, offset=1)
        .with_columns(pl.col(RANK).cast(pl.Int64))
    )


def _weights(modalities: list[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return {modality: 1.0 for modality in modalities}
    unknown = sorted(set(weights) - set(modalities))
    if unknown:
        raise ValueError(f"weights given for modalities without results: {unknown}")
    chosen = {modality: float(weights.get(modality, 0.0)) for modality in modalities}
    if any(value < 0 for value in chosen.values()) or sum(chosen.values()) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
    return chosen


def _fused_score(
    strategy: str, ranked: dict[str, pl.DataFrame], weight: dict[str, float], missing: str
) -> pl.Expr:
    if strategy in ("rrf", "hybrid_rrf"):
        terms = [
            (weight[modality] / (RRF_K + pl.col(_rank_column(modality)))).fill_null(0.0)
            for modality in ranked
        ]
        return pl.sum_horizontal(terms)
    if strategy == "hybrid":
        vector_legs = {leg: frame for leg, frame in ranked.items() if leg != KEYWORD}
        share = sum(weight[leg] for leg in vector_legs) / sum(weight.values())
        keyword = pl.col(_score_column(KEYWORD)) / ranked[KEYWORD][SCORE].max()
        if not vector_legs or share == 0:
            return keyword.fill_null(0.0)
        best = pl.max_horizontal([pl.col(_score_column(leg)) for leg in vector_legs])
        vector = best.fill_null(best.min())
        scaled = (vector - vector.min()) / (vector.max() - vector.min())
        scaled = pl.when(vector.max() > vector.min()).then(scaled).otherwise(1.0)
        # Rounded so that scores equal on paper tie (broken by item_id) whatever the float rounding.
        return (share * scaled + (1 - share) * keyword.fill_null(0.0)).round(HYBRID_DECIMALS)
    if strategy == "weighted":
        return _weighted(ranked, weight, missing)
    return pl.max_horizontal([pl.col(_score_column(modality)) for modality in ranked])


def _weighted(ranked: dict[str, pl.DataFrame], weight: dict[str, float], missing: str) -> pl.Expr:
    """Weighted mean score; a leg that missed the item counts its lowest score ("min") or 0."""
    total = sum(weight.values())
    if total <= 0:
        return pl.lit(0.0)
    terms = []
    for modality, frame in ranked.items():
        lowest = frame[SCORE].min()
        fill = lowest if missing == "min" and lowest is not None else 0.0
        terms.append(pl.col(_score_column(modality)).fill_null(fill) * (weight[modality] / total))
    return pl.sum_horizontal(terms)


def _matched(modalities: list[str]) -> pl.Expr:
    """The modalities that returned the item, in canonical order, joined by '+'."""
    parts = [
        pl.when(pl.col(_score_column(modality)).is_not_null()).then(pl.lit(modality))
        for modality in modalities
    ]
    return pl.concat_str(parts, separator="+", ignore_nulls=True)


def _payload(ranked: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Each item's payload columns, the first non-null value in modality order."""
    stacked = pl.concat(
        [frame.drop(SCORE, RANK) for frame in ranked.values()], how="diagonal_relaxed"
    )
    columns = [column for column in stacked.columns if column != ITEM_ID]
    return stacked.group_by(ITEM_ID, maintain_order=True).agg(
        pl.col(column).drop_nulls().first() for column in columns
    )


def _score_column(modality: str) -> str:
    return f"__score_{modality}"


def _rank_column(modality: str) -> str:
    return f"__rank_{modality}"
