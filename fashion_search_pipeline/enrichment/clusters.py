"""Product clusters: re-uploads of the same photo (exact image hash) and variants (image-embedding
cosine at or above a threshold, within one article type), joined transitively (union-find)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_SHA256, ITEM_ID
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE

ARTICLE_TYPE = "article_type"
# Chosen by threshold_sweep on the shared fashion catalog with a trained domain-clip's image
# vectors (docs/search-quality.md): no threshold reached a same-product-line share of 0.8; 0.99 has
# the highest share with clusters left to collapse (0.60, 15 pairs, largest cluster 3), while 0.97
# already joins 203 pairs at 0.31 (largest cluster 24) and 0.95 672 pairs at 0.25 (largest 44).
DEFAULT_VARIANT_THRESHOLD = 0.99
SWEEP_THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995)


def variant_pairs(items: pl.DataFrame, image: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Row pairs (i < j) of one article type whose unit image vectors have cosine >= threshold."""
    if not 0 < threshold <= 1:
        raise ValueError(f"a variant threshold is a cosine in (0, 1], got {threshold}")
    types = items[ARTICLE_TYPE].fill_null("").to_list() if ARTICLE_TYPE in items.columns else [""] * items.height
    groups: dict[str, list[int]] = {}
    for row, kind in enumerate(types):
        groups.setdefault(kind, []).append(row)
    pairs = []
    for rows in groups.values():
        members = np.array(rows)
        similar = np.triu(image[members] @ image[members].T >= threshold, k=1)
        pairs += [(int(members[i]), int(members[j])) for i, j in zip(*np.nonzero(similar))]
    return pairs


def product_clusters(
    items: pl.DataFrame, image: np.ndarray, threshold: float = DEFAULT_VARIANT_THRESHOLD
) -> pl.DataFrame:
    """item_id, cluster_id (int64, stable: derived from the cluster's smallest item id),
    cluster_size and how the item joined ("alone", "same_image", "variant") for each row of `items`
    (item_id, article_type, optionally image_sha256), whose unit image vectors are `image`."""
    if image.shape[0] != items.height:
        raise ValueError(f"{items.height} items but {image.shape[0]} image vectors")
    parent = list(range(items.height))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    joined = ["alone"] * items.height
    for reason, pairs in (("variant", variant_pairs(items, image, threshold)), ("same_image", _same_hash_pairs(items))):
        for i, j in pairs:
            parent[root(i)] = root(j)
            joined[i] = joined[j] = reason
    ids = items[ITEM_ID].to_list()
    roots = [root(i) for i in range(items.height)]
    smallest: dict[int, str] = {}
    for item_id, group in zip(ids, roots):
        smallest[group] = min(item_id, smallest.get(group, item_id))
    frame = pl.DataFrame({
        ITEM_ID: ids,
        CLUSTER_ID: [_stable_id(smallest[group]) for group in roots],
        "joined_by": joined,
    }, schema={ITEM_ID: pl.Utf8, CLUSTER_ID: pl.Int64, "joined_by": pl.Utf8})
    return frame.with_columns(pl.len().over(CLUSTER_ID).cast(pl.Int64).alias(CLUSTER_SIZE))


def _same_hash_pairs(items: pl.DataFrame) -> list[tuple[int, int]]:
    if IMAGE_SHA256 not in items.columns:
        return []
    first: dict[str, int] = {}
    pairs = []
    for row, digest in enumerate(items[IMAGE_SHA256].to_list()):
        if digest:
            if digest in first:
                pairs.append((first[digest], row))
            else:
                first[digest] = row
    return pairs


def _stable_id(item_id: str) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:15], 16)


def threshold_sweep(
    items: pl.DataFrame, image: np.ndarray, thresholds: Sequence[float] = SWEEP_THRESHOLDS
) -> list[dict]:
    """Per threshold: variant pairs, the share of them that look like one product line (same first
    description word and at least half their description words shared: a proxy judgment), the
    number of multi-item clusters and the largest cluster. The threshold to use is the lowest whose
    share is high enough."""
    words = [set((text or "").casefold().split()) for text in items[DESCRIPTION].to_list()]
    rows = []
    for threshold in thresholds:
        pairs = variant_pairs(items, image, threshold)
        same_line = sum(_same_line(words[i], words[j], items[DESCRIPTION][i], items[DESCRIPTION][j]) for i, j in pairs)
        clusters = product_clusters(items, image, threshold)
        sizes = clusters.unique(CLUSTER_ID)[CLUSTER_SIZE]
        rows.append({
            "threshold": threshold,
            "pairs": len(pairs),
            "same_product_line": round(same_line / len(pairs), 3) if pairs else None,
            "clusters_with_variants": int((sizes > 1).sum()),
            "largest_cluster": int(sizes.max() or 0),
        })
    return rows


def _same_line(a: set[str], b: set[str], text_a: str | None, text_b: str | None) -> bool:
    first = lambda text: (text or "").casefold().split()[:1]  # noqa: E731
    return bool(a and b) and first(text_a) == first(text_b) and len(a & b) / len(a | b) >= 0.5
