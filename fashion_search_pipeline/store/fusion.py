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
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from fashion_search_pipeline.columns import ITEM_ID, MATCHED, MODALITIES, RANK, SCORE

STRATEGIES = ("raw", "rrf", "weighted", "image", "text")
# CatalogSearch's fusion for a model no retrieval evaluation has chosen one for (see
# store.fusion_choices): the best of `make eval` on the shared fashion catalog with domain-clip
# (mean MRR of fused text and image search: weighted 0.734, image 0.720, rrf 0.715, raw 0.702,
# text 0.683).
DEFAULT_STRATEGY = "weighted"
RRF_K = 60
MISSING_SCORES = ("min", "zero")


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

    `weights` (per modality, default equal) apply to "rrf" and "weighted";
    `missing` chooses how "weighted" scores a modality that missed the item.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; choose one of {STRATEGIES}")
    if missing not in MISSING_SCORES:
        raise ValueError(f"unknown missing-score rule {missing!r}; choose one of {MISSING_SCORES}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if strategy in MODALITIES:
        if strategy not in results:
            raise ValueError(f"fusion strategy {strategy!r} needs {strategy} results; got {sorted(results)}")
        results = {strategy: results[strategy]}
    if not results:
        raise ValueError("no results to fuse")
    modalities = sorted(results, key=_modality_order)
    ranked = {modality: _ranked(modality, results[modality]) for modality in modalities}
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
    return (MODALITIES.index(modality) if modality in MODALITIES else len(MODALITIES), modality)


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
    if strategy == "rrf":
        terms = [
            (weight[modality] / (RRF_K + pl.col(_rank_column(modality)))).fill_null(0.0)
            for modality in ranked
        ]
        return pl.sum_horizontal(terms)
    if strategy == "weighted":
        total = sum(weight.values())
        terms = []
        for modality, frame in ranked.items():
            lowest = frame[SCORE].min()
            fill = lowest if missing == "min" and lowest is not None else 0.0
            terms.append(pl.col(_score_column(modality)).fill_null(fill) * (weight[modality] / total))
        return pl.sum_horizontal(terms)
    return pl.max_horizontal([pl.col(_score_column(modality)) for modality in ranked])


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
