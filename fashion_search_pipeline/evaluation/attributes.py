"""Zero-shot classification of catalog attributes (article type, colour, ...) by one model.

Each attribute's labels (its distinct values in the catalog) become text prompts,
embedded by the model's text encoder; every item's image vector picks the label
whose prompt is most similar (evaluation.zero_shot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from fashion_search_pipeline.evaluation.zero_shot import ZeroShotReport, classify, prompts_for, score_zero_shot

DEFAULT_ATTRIBUTES = ("article_type", "colour", "gender", "category", "season", "usage")
DEFAULT_TEMPLATE = "a photo of a {label}"
PROMPT_TEMPLATES = {
    "colour": "a photo of a {label} coloured product",
    "gender": "a photo of a product for {label}",
    "season": "a photo of a product for {label}",
    "usage": "a photo of a product for {label} use",
}
MAX_LABELS = 500


def classify_attributes(
    image_vectors: np.ndarray,
    items: pl.DataFrame,
    encode_text: Callable[[Sequence[str]], np.ndarray],
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
) -> tuple[list[ZeroShotReport], list[str]]:
    """Zero-shot scores for each attribute column of `items` (row i is image_vectors[i]).

    Returns the reports and notes on attributes left out: absent, with fewer than
    two labels, or with more than MAX_LABELS (free text rather than a label).
    """
    if len(image_vectors) != items.height:
        raise ValueError(f"{len(image_vectors)} image vectors for {items.height} items")
    reports: list[ZeroShotReport] = []
    notes: list[str] = []
    for attribute in attributes:
        if attribute not in items.columns:
            continue
        truth = [None if v is None or not v.strip() else v.strip() for v in items[attribute].cast(pl.Utf8).to_list()]
        labels = sorted({label for label in truth if label is not None})
        if not 2 <= len(labels) <= MAX_LABELS:
            notes.append(f"zero-shot {attribute}: {len(labels)} distinct labels, left out (needs 2 to {MAX_LABELS})")
            continue
        template = PROMPT_TEMPLATES.get(attribute, DEFAULT_TEMPLATE)
        label_vectors = encode_text(prompts_for(labels, template))
        predicted = [labels[i] for i in classify(image_vectors, label_vectors)] if items.height else []
        reports.append(score_zero_shot(attribute, truth, predicted, labels))
    return reports, notes
