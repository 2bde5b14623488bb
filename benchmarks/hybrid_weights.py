"""The keyword weight of the hybrid fusion, chosen on one half of the shopper queries and quoted on the other.

The shopper queries of the retrieval evaluation are split in two by a hash of their text. For each
keyword weight, hybrid's MRR is measured on both halves, over all items and over the items a
trained model's training held out; BM25 alone (the keyword leg) is given for comparison. Choose
the weight on the "choose" half only; the "quote" half is the honest figure.

    python -m benchmarks.hybrid_weights --home /tmp/eval16 --model domain-clip

`--home` is a data folder whose tables the model embedded (`fashion-search evaluate --home ...`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np

from fashion_search_pipeline.evaluation.held_out import HELD_OUT, card_subsets
from fashion_search_pipeline.evaluation.keyword_scores import keyword_score_matrix
from fashion_search_pipeline.evaluation.retrieval import FUSION_DEPTH, _text_query_task
from fashion_search_pipeline.evaluation.shopper_queries import shopper_queries
from fashion_search_pipeline.evaluation.vectors import read_model_vectors
from fashion_search_pipeline.models.encoders import encode_texts
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.published import training_cards
from fashion_search_pipeline.models.registry import load_registry
from fashion_search_pipeline.store.fusion import HYBRID_WEIGHTS
from fashion_search_pipeline.store.keyword import KEYWORD
from fashion_search_pipeline.store.tables import connect, open_existing_table, table_name

WEIGHTS = (1, 2, 4, 6, 8, 12, 16, 24, 32)
HALVES = ("choose", "quote")


def query_half(query: str) -> str:
    """Which half a query falls in: by the first byte of the sha256 of its text."""
    return HALVES[hashlib.sha256(query.encode()).digest()[0] % 2]


def half_mrr(queries: list[str], ranks: list[np.ndarray]) -> dict[str, float]:
    """MRR per half over the queries with a relevant item (the rank of the first one)."""
    reciprocal: dict[str, list[float]] = {half: [] for half in HALVES}
    for query, found in zip(queries, ranks):
        if len(found):
            reciprocal[query_half(query)].append(1.0 / float(np.min(found)))
    return {half: float(np.mean(values)) if values else float("nan") for half, values in reciprocal.items()}


def run(home: Path, model: str) -> dict:
    """hybrid MRR per keyword weight and half, on all items and on held-out items; BM25 alone too."""
    specs = load_registry(home / "models.yaml", models_root=home / "models")
    db = connect(str(home / "lancedb"))
    vectors = read_model_vectors(db, model)
    encode = partial(encode_texts, load_clip(specs[model]))
    text_table = open_existing_table(db, table_name(model, "text"))
    if text_table is None:
        raise SystemExit(f"model {model!r} has no text table in {home / 'lancedb'}: nothing for the keyword leg")
    scorer = partial(keyword_score_matrix, text_table, depth=FUSION_DEPTH)
    subsets = card_subsets(training_cards(specs).get(model), vectors.item_ids) or {}
    parts = {"all": vectors, **({HELD_OUT: vectors.subset(subsets[HELD_OUT])} if HELD_OUT in subsets else {})}
    queries, _ = shopper_queries(vectors.items)
    default = HYBRID_WEIGHTS[KEYWORD]
    figures: dict = {"split": {half: sum(query_half(q) == half for q in queries.queries) for half in HALVES}}
    try:
        for weight in WEIGHTS:
            HYBRID_WEIGHTS[KEYWORD] = float(weight)
            for part, items in parts.items():
                results = {r.strategy: r for r in _text_query_task(items, "shopper", queries, encode, FUSION_DEPTH,
                                                                   None, 0, scorer)}
                figures.setdefault(part, {})[f"hybrid, keyword weight {weight}"] = half_mrr(
                    results["hybrid"].queries, results["hybrid"].ranks)
                figures[part]["keyword alone"] = half_mrr(results[KEYWORD].queries, results[KEYWORD].ranks)
    finally:
        HYBRID_WEIGHTS[KEYWORD] = default
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hybrid_weights", description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="data folder with the model's tables")
    parser.add_argument("--model", default="domain-clip")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.home, args.model), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
