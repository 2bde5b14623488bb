"""Caption-image mismatches from hand-made vectors."""

from __future__ import annotations

import numpy as np
import polars as pl

from fashion_search_pipeline.enrichment.caption_qa import caption_mismatches


def test_an_item_whose_description_is_far_from_its_image_is_listed_with_its_rank():
    n = 12
    text = np.eye(n, dtype=np.float32)
    image = np.eye(n, dtype=np.float32)
    image[3] = 0.0
    image[3, 7] = 1.0  # item 3's photo looks like item 7's description
    items = pl.DataFrame({
        "item_id": [f"i{j:02d}" for j in range(n)],
        "image_uri": [f"/img/{j}.jpg" for j in range(n)],
        "description": [f"product {j}" for j in range(n)],
    })
    assert caption_mismatches(items, image, text, top=10).height == 0  # rank 2 is within the top 10
    listed = caption_mismatches(items, image, text, top=1)
    assert listed["item_id"].to_list() == ["i03"]
    assert listed["description_rank"].to_list() == [2]
    assert listed.columns == ["item_id", "image_uri", "description", "description_rank"]


def test_items_sharing_a_description_are_not_mismatches_of_each_other():
    text = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    image = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "description": ["Red Tee", "red  tee", "Cap"]})
    assert caption_mismatches(items, image, text, top=1).height == 0
