"""The held-out split and MRR that judge a trained model (evaluation/held_out.py)."""

import random

import numpy as np
import pytest

from fashion_search_pipeline.evaluation.held_out import (
    HELD_OUT,
    IN_SAMPLE,
    card_subsets,
    holdout_split,
    paired_mrr,
    random_mrr,
)


def test_paired_mrr_ranks_each_query_against_its_own_candidate():
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    # query 0 ranks its own first, query 1 second (0.8 ahead), query 2 first
    assert paired_mrr(scores) == pytest.approx((1 + 1 / 2 + 1) / 3)


def test_paired_mrr_of_indistinguishable_candidates_is_the_random_mrr():
    # every query ties on every candidate; ties go to the candidate listed first, so query i ranks its own at i + 1
    assert paired_mrr(np.zeros((5, 5))) == pytest.approx(random_mrr(5))


def test_random_mrr_matches_hand_computed_values():
    assert random_mrr(1) == 1.0
    assert random_mrr(2) == pytest.approx((1 + 1 / 2) / 2)
    assert random_mrr(4) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # 25/48
    assert random_mrr(4) == pytest.approx(25 / 48)
    with pytest.raises(ValueError, match="at least 1"):
        random_mrr(0)


def test_holdout_split_is_stable_across_runs_orderings_and_other_items():
    ids = [f"item-{i}" for i in range(2000)]
    train, held = holdout_split(ids, 0.1)
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    assert holdout_split(shuffled, 0.1) == (train, held)
    assert set(train) | set(held) == set(ids) and not set(train) & set(held)
    assert 150 <= len(held) <= 250
    # an item's side does not depend on which other items exist
    subset_train, subset_held = holdout_split(ids[:300], 0.1)
    assert set(subset_held) == set(held) & set(ids[:300])
    assert set(subset_train) == set(train) & set(ids[:300])
    assert holdout_split(ids, 0.1, seed="other")[1] != held


def test_holdout_split_refuses_too_few_items_and_empty_sides():
    with pytest.raises(ValueError, match="at least 2 items"):
        holdout_split(["only"], 0.5)
    with pytest.raises(ValueError, match="no item on the held-out side.*at least 2 items"):
        holdout_split(["a", "b", "c"], 1e-12)
    with pytest.raises(ValueError, match="duplicate item ids"):
        holdout_split(["a", "b", "a"])
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_split(["a", "b"], 1.0)


def test_card_subsets_recompute_the_split_a_model_card_records():
    ids = [f"item-{i}" for i in range(200)]
    train, held = holdout_split(ids, 0.2, seed="s1")
    card = {"items": {"train": len(train), "held_out": len(held), "holdout_fraction": 0.2, "holdout_seed": "s1"}}
    subsets = card_subsets(card, ids)
    assert subsets[HELD_OUT] == held
    # in-sample: as many training items as are held out, the same ones whatever the order or the other items
    assert len(subsets[IN_SAMPLE]) == len(held) and set(subsets[IN_SAMPLE]) < set(train)
    assert subsets[IN_SAMPLE] == sorted(subsets[IN_SAMPLE])
    assert card_subsets(card, ids[::-1]) == subsets
    # without a recorded seed: the one training uses by default
    assert card_subsets({"items": {"holdout_fraction": 0.2}}, ids)[HELD_OUT] == holdout_split(ids, 0.2)[1]
    assert card_subsets({"items": {"train": 10}}, ids) is None
    assert card_subsets(None, ids) is None
    assert card_subsets({"items": {"holdout_fraction": 0.2}}, ["only"]) is None  # one side would be empty
