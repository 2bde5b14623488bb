import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashion_search_pipeline.evaluation import metrics
from fashion_search_pipeline.evaluation.metrics import compute_metrics, ranks_from_scores


def as_lists(ranks):
    return [r.tolist() for r in ranks]


def test_ranks_follow_descending_score():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],
            [0.2, 0.8, 0.6, 0.7],
            [0.4, 0.3, 0.2, 0.1],
        ]
    )
    ranks = ranks_from_scores(scores, [{0}, [2, 0], set()])
    assert as_lists(ranks) == [[1], [3, 4], []]
    assert all(r.dtype == np.int64 for r in ranks)


def test_ties_go_to_the_lower_candidate_index():
    scores = np.array([[0.5, 0.5, 0.5, 0.1, 0.5]] * 4)
    ranks = ranks_from_scores(scores, [{0}, {1}, {4}, {2, 3}])
    assert as_lists(ranks) == [[1], [2], [4], [3, 5]]


def test_duplicate_relevant_indices_count_once():
    ranks = ranks_from_scores(np.array([[0.1, 0.9, 0.5]]), [[2, 2, 0]])
    assert as_lists(ranks) == [[2, 3]]


def test_ranks_are_exact_across_many_blocks(monkeypatch):
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 7)
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(9, 5)).astype(np.float32)
    relevant = [set(rng.choice(5, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(9)]
    assert as_lists(ranks_from_scores(scores, relevant)) == reference_ranks(scores, relevant)


def test_no_queries_gives_no_ranks():
    assert ranks_from_scores(np.zeros((0, 3)), []) == []


@pytest.mark.parametrize(
    ("scores", "relevant", "message"),
    [
        (np.zeros(3), [{0}], "matrix"),
        (np.zeros((2, 3)), [{0}], "2 queries"),
        (np.array([[0.1, np.nan]]), [{0}], "NaN"),
        (np.zeros((1, 3)), [{3}], "query 0"),
        (np.zeros((1, 3)), [{-1}], "query 0"),
    ],
)
def test_bad_ranking_input_is_rejected(scores, relevant, message):
    with pytest.raises(ValueError, match=message):
        ranks_from_scores(scores, relevant)


def test_full_size_ranking_never_materialises_a_full_argsort():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5000, 5000), dtype=np.float32)
    relevant = [{i} for i in range(5000)]
    tracemalloc.start()
    try:
        ranks = ranks_from_scores(scores, relevant)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    argsort_bytes = 5000 * 5000 * 8
    assert peak < argsort_bytes / 4
    expected = 1 + np.count_nonzero(scores[7] > scores[7, 7])
    assert ranks[7].tolist() == [expected]


def test_metrics_from_hand_computed_ranks():
    # Query 0: one relevant item at rank 1. Query 1: two relevant at ranks 3 and 4.
    # Query 2: no relevant item -> skipped.
    result = compute_metrics([np.array([1]), np.array([4, 3]), np.array([], dtype=np.int64)])
    assert result.queries == 2
    assert result.skipped == 1
    assert result.mrr == pytest.approx((1 / 1 + 1 / 3) / 2)
    assert result.recall == {1: pytest.approx(0.5), 5: pytest.approx(1.0), 10: pytest.approx(1.0)}
    ndcg_query_1 = (1 / math.log2(4) + 1 / math.log2(5)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert result.ndcg == pytest.approx((1.0 + ndcg_query_1) / 2)
    assert result.ndcg_k == 10
    assert result.median_rank == 2.0


def test_recall_is_the_fraction_of_relevant_items_in_the_top_k():
    result = compute_metrics([np.array([1, 2, 7])], ks=(1, 2, 10), ndcg_k=2)
    assert result.recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 10: pytest.approx(1.0)}
    # Ideal DCG@2 has two relevant items on top, as here.
    assert result.ndcg == pytest.approx(1.0)
    assert result.mrr == 1.0


def test_ndcg_only_counts_the_top_k():
    assert compute_metrics([np.array([2])], ndcg_k=1).ndcg == 0.0
    assert compute_metrics([np.array([2])], ndcg_k=2).ndcg == pytest.approx(1 / math.log2(3))


def test_median_rank_of_an_odd_number_of_queries():
    assert compute_metrics([np.array([5]), np.array([1]), np.array([30, 2])]).median_rank == 2.0


def test_as_dict_flattens_for_reports():
    flat = compute_metrics([np.array([2])], ks=(1, 5)).as_dict()
    assert flat == {
        "mrr": 0.5,
        "recall@1": 0.0,
        "recall@5": 1.0,
        "ndcg@10": pytest.approx(1 / math.log2(3)),
        "median_rank": 2.0,
        "queries": 1,
        "skipped": 0,
    }


@pytest.mark.parametrize("ranks", [[], [np.array([], dtype=np.int64)] * 3])
def test_nothing_to_evaluate_gives_none_not_nan(ranks):
    result = compute_metrics(ranks)
    assert result.queries == 0
    assert result.skipped == len(ranks)
    assert result.as_dict() == {
        "mrr": None,
        "recall@1": None,
        "recall@5": None,
        "recall@10": None,
        "ndcg@10": None,
        "median_rank": None,
        "queries": 0,
        "skipped": len(ranks),
    }


@pytest.mark.parametrize(
    ("ranks", "kwargs", "message"),
    [
        ([np.array([0])], {}, "query 0"),
        ([np.array([1]), np.array([2, 2])], {}, "query 1"),
        ([np.array([[1]])], {}, "one-dimensional"),
        ([np.array([1])], {"ks": (0, 5)}, "ks"),
        ([np.array([1])], {"ks": (5, 5)}, "ks"),
        ([np.array([1])], {"ks": ()}, "ks"),
        ([np.array([1])], {"ndcg_k": 0}, "ndcg_k"),
    ],
)
def test_bad_metric_input_is_rejected(ranks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(ranks, **kwargs)


def test_ranks_from_scores_feed_compute_metrics():
    scores = np.array([[0.9, 0.2, 0.1], [0.9, 0.2, 0.1], [0.3, 0.3, 0.3]])
    result = compute_metrics(ranks_from_scores(scores, [{0}, {2}, {1}]), ks=(1,))
    assert result.mrr == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert result.recall == {1: pytest.approx(1 / 3)}


# Independent reference: a full sort per query, then the textbook formulas.


def reference_ranks(scores, relevant):
    ranks = []
    for row, items in zip(scores, relevant):
        order = np.lexsort((np.arange(len(row)), -row))
        position = {int(candidate): place + 1 for place, candidate in enumerate(order)}
        ranks.append(sorted(position[i] for i in set(items)))
    return ranks


def reference_metrics(ranks, ks, ndcg_k):
    evaluated = [r for r in ranks if r]
    if not evaluated:
        return None
    n = len(evaluated)
    mrr = sum(1 / min(r) for r in evaluated) / n
    recall = {k: sum(len([x for x in r if x <= k]) / len(r) for r in evaluated) / n for k in ks}
    ndcg = 0.0
    for r in evaluated:
        dcg = sum(1 / math.log2(x + 1) for x in r if x <= ndcg_k)
        ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(r), ndcg_k) + 1))
        ndcg += dcg / ideal / n
    firsts = sorted(min(r) for r in evaluated)
    middle = len(firsts) // 2
    median = firsts[middle] if len(firsts) % 2 else (firsts[middle - 1] + firsts[middle]) / 2
    return mrr, recall, ndcg, median, n


@st.composite
def retrieval_problems(draw):
    n_queries = draw(st.integers(0, 6))
    n_candidates = draw(st.integers(1, 12))
    # Few distinct score values, so ties are common.
    values = st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0])
    scores = np.array(
        [[draw(values) for _ in range(n_candidates)] for _ in range(n_queries)], dtype=np.float64
    ).reshape(n_queries, n_candidates)
    relevant = [
        draw(st.sets(st.integers(0, n_candidates - 1), max_size=n_candidates)) for _ in range(n_queries)
    ]
    ks = draw(st.lists(st.integers(1, 14), min_size=1, max_size=3, unique=True))
    ndcg_k = draw(st.integers(1, 14))
    return scores, relevant, ks, ndcg_k


@settings(max_examples=300, deadline=None)
@given(retrieval_problems())
def test_agrees_with_a_full_sort_reference(problem):
    scores, relevant, ks, ndcg_k = problem
    ranks = ranks_from_scores(scores, relevant)
    expected_ranks = reference_ranks(scores, relevant)
    assert as_lists(ranks) == expected_ranks

    result = compute_metrics(ranks, ks=ks, ndcg_k=ndcg_k)
    expected = reference_metrics(expected_ranks, ks, ndcg_k)
    assert result.skipped == sum(1 for r in expected_ranks if not r)
    if expected is None:
        assert result.queries == 0 and result.mrr is None and result.ndcg is None
        return
    mrr, recall, ndcg, median, n = expected
    assert result.queries == n
    assert result.mrr == pytest.approx(mrr)
    assert result.recall == {k: pytest.approx(v) for k, v in recall.items()}
    assert result.ndcg == pytest.approx(ndcg)
    assert result.median_rank == pytest.approx(median)
