"""Product clusters from hand-made unit vectors: exact image hash, variants within an article type."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.enrichment.clusters import product_clusters, threshold_sweep, variant_pairs
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE


def unit(*rows) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


ITEMS = pl.DataFrame({
    "item_id": ["a", "b", "c", "d", "e"],
    "description": ["Puma Red Tee", "Puma Blue Tee", "Nike Cap", "Puma Red Tee", "Puma Red Shoes"],
    "article_type": ["Tshirts", "Tshirts", "Caps", "Tshirts", "Casual Shoes"],
    "image_sha256": ["h1", "h2", "h3", "h4", "h5"],
})
# a ~ b (cosine 0.995), e is as close to a but another article type, c and d far from everything.
IMAGE = unit([1, 0.1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0.1, 0.001, 0])


def clusters_of(frame: pl.DataFrame) -> set[frozenset[str]]:
    return {frozenset(group) for group in frame.group_by(CLUSTER_ID).agg("item_id")["item_id"].to_list()}


def test_variants_join_within_an_article_type_only():
    clusters = product_clusters(ITEMS, IMAGE, threshold=0.99)
    assert clusters_of(clusters) == {frozenset("ab"), frozenset("c"), frozenset("d"), frozenset("e")}
    assert dict(zip(clusters["item_id"], clusters[CLUSTER_SIZE])) == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}
    assert dict(zip(clusters["item_id"], clusters["joined_by"]))["a"] == "variant"


def test_the_same_image_hash_joins_even_far_apart_vectors_and_ids_are_stable():
    items = ITEMS.with_columns(pl.Series("image_sha256", ["h1", "h2", "h3", "h3", "h5"]))
    clusters = product_clusters(items, IMAGE, threshold=0.99)
    assert frozenset("cd") in clusters_of(clusters)
    assert dict(zip(clusters["item_id"], clusters["joined_by"]))["d"] == "same_image"
    again = product_clusters(items.reverse(), IMAGE[::-1].copy(), threshold=0.99)
    assert dict(zip(clusters["item_id"], clusters[CLUSTER_ID])) == dict(zip(again["item_id"], again[CLUSTER_ID]))


def test_a_high_threshold_leaves_every_item_alone():
    clusters = product_clusters(ITEMS, IMAGE, threshold=1.0)
    assert clusters[CLUSTER_SIZE].to_list() == [1] * 5
    assert clusters[CLUSTER_ID].n_unique() == 5


@pytest.mark.parametrize("threshold", [0, -0.5, 1.5])
def test_a_threshold_outside_0_1_is_rejected(threshold):
    with pytest.raises(ValueError, match="variant threshold"):
        variant_pairs(ITEMS, IMAGE, threshold)


def test_mismatched_vectors_are_rejected():
    with pytest.raises(ValueError, match="5 items but 2 image vectors"):
        product_clusters(ITEMS, IMAGE[:2])


def test_the_sweep_reports_pairs_and_the_share_from_one_product_line():
    rows = {row["threshold"]: row for row in threshold_sweep(ITEMS, IMAGE, (0.5, 0.99))}
    assert rows[0.99] == {"threshold": 0.99, "pairs": 1, "same_product_line": 1.0,
                          "clusters_with_variants": 1, "largest_cluster": 2}
    assert rows[0.5]["pairs"] == 1
