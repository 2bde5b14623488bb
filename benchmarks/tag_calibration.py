"""Zero-shot tag precision of a trained model, judged on the items its training held out.

product_tags chooses a mirrored facet's abstain threshold on a trained model's held-out items. This
measures how well that threshold carries over to items it was not chosen on: the held-out items are
split in two (alternate ids), the threshold is chosen on one half and the precision counted on the
other, both ways round. For comparison it also chooses the threshold on the training side, as an
asset that ignored the split would, and counts the precision on the held-out items.

    python -m benchmarks.tag_calibration --home /tmp/eval16 --model domain-clip

`--home` is a data folder whose tables were embedded by the trained model (`fashion-search evaluate
--home ...` makes one); the facets are the shipped facets.yaml unless `--facets` names another file.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np

from fashion_search_pipeline.enrichment.tags import FacetConfig, abstain_threshold, load_facets, predict_facet
from fashion_search_pipeline.evaluation.held_out import HELD_OUT, card_subsets
from fashion_search_pipeline.evaluation.vectors import read_model_vectors
from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.published import training_cards
from fashion_search_pipeline.models.registry import load_registry
from fashion_search_pipeline.store.tables import connect


def carried_over_precision(confidence: np.ndarray, correct: np.ndarray, target: float) -> tuple[float | None, int]:
    """Two-fold: the threshold chosen on alternate items, the precision counted on the others (both
    ways round); (precision of what was kept, items kept)."""
    halves = (np.arange(confidence.size) % 2 == 0, np.arange(confidence.size) % 2 == 1)
    kept = right = 0
    for chosen_on, counted_on in (halves, halves[::-1]):
        threshold, _, _ = abstain_threshold(confidence[chosen_on], correct[chosen_on], target)
        keep = counted_on & (confidence >= threshold)
        kept += int(keep.sum())
        right += int(correct[keep].sum())
    return (right / kept if kept else None), kept


def run(home: Path, model: str, facets: FacetConfig) -> dict:
    """Per mirrored facet: the held-out threshold product_tags chooses, its two-fold carry-over, and
    the held-out precision of a threshold chosen on the training side."""
    specs = load_registry(home / "models.yaml", models_root=home / "models")
    vectors = read_model_vectors(connect(str(home / "lancedb")), model)
    ids = vectors.items["item_id"].to_list()
    subsets = card_subsets(training_cards(specs).get(model), ids)
    if subsets is None:
        raise SystemExit(f"model {model!r} has no model card with a held-out split: nothing to judge tags on")
    held = np.isin(ids, subsets[HELD_OUT])
    encode = partial(encode_texts, load_clip(specs[model]))
    figures = {}
    for facet in facets.facets:
        mirrored = facet.mirrors in vectors.items.columns
        prediction = predict_facet(facet, vectors.items, vectors.image, encode) if mirrored else None
        if prediction is None:
            continue
        predicted, confidence = prediction
        correct = np.array([p == t for p, t in zip(predicted, vectors.items[facet.mirrors].to_list())], dtype=bool)
        threshold, precision, coverage = abstain_threshold(confidence[held], correct[held], facets.target_precision)
        carried, kept = carried_over_precision(confidence[held], correct[held], facets.target_precision)
        train_threshold, _, _ = abstain_threshold(confidence[~held], correct[~held], facets.target_precision)
        from_training = held & (confidence >= train_threshold)
        figures[facet.name] = {
            "mirrors": facet.mirrors,
            "held_out_items": int(held.sum()),
            "accuracy_held_out": float(correct[held].mean()),
            "threshold": threshold,
            "precision_where_chosen": precision,
            "coverage_where_chosen": coverage,
            "two_fold_precision": carried,
            "two_fold_coverage": kept / int(held.sum()),
            "training_side_threshold": train_threshold,
            "held_out_precision_of_training_side_threshold":
                float(correct[from_training].mean()) if from_training.any() else None,
            "held_out_coverage_of_training_side_threshold": float(from_training.sum() / held.sum()),
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tag_calibration", description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="data folder with the trained model's tables")
    parser.add_argument("--model", default="domain-clip")
    parser.add_argument("--facets", default=None, help="facet YAML (default: the shipped facets.yaml)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.home, args.model, load_facets(args.facets)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
