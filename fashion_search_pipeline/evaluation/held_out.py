"""How a trained model is judged: a stable held-out split of the catalog, and MRR over its pairs."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

MIN_ITEMS = 2  # one on each side of the split
DEFAULT_SEED = "fsp"
# Names of the item subsets the retrieval evaluation reports a trained model on, besides all items.
HELD_OUT = "held_out"
IN_SAMPLE = "in_sample"


def holdout_split(item_ids: Sequence[str], holdout_fraction: float = 0.1,
                  seed: str = DEFAULT_SEED) -> tuple[list[str], list[str]]:
    """Split item ids into (train, held_out), both sorted.

    An item is held out when the hash of (seed, item_id) falls below holdout_fraction, so its side
    never depends on the order of the ids, on the other items, or on the run.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be between 0 and 1 (exclusive), got {holdout_fraction}")
    ids = list(item_ids)
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"holdout_split got duplicate item ids: {duplicates[:5]}")
    if len(ids) < MIN_ITEMS:
        raise ValueError(f"holdout_split needs at least {MIN_ITEMS} items, got {len(ids)}")
    held_out = sorted(i for i in ids if _holdout_score(seed, i) < holdout_fraction)
    train = sorted(i for i in ids if _holdout_score(seed, i) >= holdout_fraction)
    if not held_out or not train:
        side = "held-out" if not held_out else "training"
        raise ValueError(
            f"holdout_split put no item on the {side} side ({len(ids)} items, "
            f"holdout_fraction={holdout_fraction}); at least {MIN_ITEMS} items with one on each side are "
            "needed: add items or change holdout_fraction")
    return train, held_out


def card_subsets(card: Mapping | None, item_ids: Sequence[str]) -> dict[str, list[str]] | None:
    """The items a model card's training held out, and as many of those it trained on:
    {HELD_OUT: ids, IN_SAMPLE: ids}, both sorted.

    The split is recomputed from the card's `items.holdout_fraction` (and `items.holdout_seed`,
    default DEFAULT_SEED) exactly as training made it; an item's side depends only on its id, so
    items added after training fall on a side too. IN_SAMPLE is a stable sample of the training
    side of the same size as HELD_OUT, so the two make catalogs of one size whose figures compare
    (a smaller catalog alone raises MRR). None when the card records no split or one side is empty.
    """
    split = (card or {}).get("items") or {}
    fraction = split.get("holdout_fraction")
    if fraction is None:
        return None
    seed = str(split.get("holdout_seed", DEFAULT_SEED))
    try:
        train, held = holdout_split(item_ids, float(fraction), seed)
    except ValueError:
        return None
    sample = sorted(train, key=lambda item_id: (_holdout_score(f"{seed}:{IN_SAMPLE}", item_id), item_id))
    return {HELD_OUT: held, IN_SAMPLE: sorted(sample[: len(held)])}


def _holdout_score(seed: str, item_id: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def random_mrr(n: int) -> float:
    """Expected MRR of a uniformly random ranking of n candidates with one relevant: (1/n) sum 1/r."""
    if n < 1:
        raise ValueError(f"random_mrr needs at least 1 candidate, got {n}")
    return sum(1.0 / r for r in range(1, n + 1)) / n


def paired_mrr(scores: np.ndarray) -> float:
    """MRR when query i's only relevant candidate is candidate i (scores: queries x candidates;
    ties: the candidate listed first ranks higher)."""
    own = scores.diagonal()
    ahead = (scores > own[:, None]).sum(axis=1)
    earlier = np.tril(scores == own[:, None], k=-1).sum(axis=1)
    ranks = 1 + ahead + earlier
    return float(np.mean(1.0 / ranks))
