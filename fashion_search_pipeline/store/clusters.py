"""Product clusters in the embedding tables, and collapsing search results to one row per cluster."""

from __future__ import annotations

import polars as pl

from fashion_search_pipeline.columns import ITEM_ID, RANK

CLUSTER_ID = "cluster_id"
CLUSTER_SIZE = "cluster_size"
# Collapsed results: how many other items of the product's cluster the shopper does not see.
VARIANTS = "variants"


def collapse_variants(results: pl.DataFrame, k: int) -> pl.DataFrame:
    """The best-ranked row of each cluster, at most `k`, re-ranked from 1, with `variants`
    (cluster size - 1; 0 for items without a cluster). Results without cluster columns
    (product_clusters has not run) are only cut to `k`."""
    if CLUSTER_ID not in results.columns:
        return results.head(k).with_columns(pl.lit(0, pl.Int64).alias(VARIANTS))
    size = pl.col(CLUSTER_SIZE) if CLUSTER_SIZE in results.columns else pl.lit(1)
    key = pl.coalesce(pl.col(CLUSTER_ID).cast(pl.Utf8), pl.lit("item:") + pl.col(ITEM_ID))
    return (
        results.sort(RANK)
        .filter(key.is_first_distinct())
        .head(k)
        .with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(RANK),
            (size.fill_null(1).cast(pl.Int64) - 1).clip(lower_bound=0).alias(VARIANTS),
        )
    )
