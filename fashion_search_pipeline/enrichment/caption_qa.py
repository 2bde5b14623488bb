"""Catalog QA for merchandisers: items whose own description is not among the descriptions their
image is closest to (a wrong photo, a copy-pasted caption, a mislabelled product)."""

from __future__ import annotations

import numpy as np
import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_URI, ITEM_ID

DEFAULT_TOP = 10
_BLOCK = 1024


def caption_mismatches(
    items: pl.DataFrame, image: np.ndarray, text: np.ndarray, top: int = DEFAULT_TOP
) -> pl.DataFrame:
    """item_id, image_uri, description and the rank of the item's own description among all
    descriptions by cosine to its image, for the items ranked below `top`, worst first.
    Items with the same description share it (the best of their ranks counts)."""
    if not image.shape == text.shape or image.shape[0] != items.height:
        raise ValueError(
            f"{items.height} items need as many image and text vectors, got {image.shape} and {text.shape}"
        )
    descriptions = items[DESCRIPTION].fill_null("").to_list()
    groups: dict[str, list[int]] = {}
    for row, description in enumerate(descriptions):
        groups.setdefault(" ".join(description.casefold().split()), []).append(row)
    ranks = np.empty(items.height, dtype=np.int64)
    for start in range(0, items.height, _BLOCK):
        scores = image[start : start + _BLOCK] @ text.T
        for offset, row in enumerate(range(start, min(start + _BLOCK, items.height))):
            same = groups[" ".join(descriptions[row].casefold().split())]
            own = scores[offset, same].max()
            ranks[row] = int((scores[offset] > own).sum()) + 1
    frame = items.select(ITEM_ID, *[c for c in (IMAGE_URI, DESCRIPTION) if c in items.columns]).with_columns(
        pl.Series("description_rank", ranks)
    )
    return frame.filter(pl.col("description_rank") > top).sort(["description_rank", ITEM_ID], descending=[True, False])
