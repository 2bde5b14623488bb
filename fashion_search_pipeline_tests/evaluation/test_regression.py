import pytest

from fashion_search_pipeline.evaluation.regression import MetricDrop, metric_drops

BEFORE = [
    {"model": "m", "task": "text_to_image", "strategy": None, "mrr": 0.50, "recall@1": 0.40, "ndcg@10": 0.6},
    {"model": "m", "task": "text_search", "strategy": "rrf", "mrr": 0.30, "recall@10": None},
    {"model": "gone", "task": "text_to_image", "strategy": None, "mrr": 0.9},
]


def test_drops_beyond_the_margin_are_reported_per_metric():
    after = [
        {"model": "m", "task": "text_to_image", "strategy": None, "mrr": 0.45, "recall@1": 0.39, "ndcg@10": 0.7},
        {"model": "m", "task": "text_search", "strategy": "rrf", "mrr": 0.10, "recall@10": 0.2},
        {"model": "new", "task": "text_to_image", "strategy": None, "mrr": 0.0},
    ]
    drops = metric_drops(after, BEFORE, margin=0.02)
    assert drops == [
        MetricDrop("m", "text_to_image", None, "mrr", 0.50, 0.45),
        MetricDrop("m", "text_search", "rrf", "mrr", 0.30, 0.10),
    ]
    assert drops[1].describe() == "m/text_search/rrf mrr: 0.3000 -> 0.1000 (-0.2000)"


def test_a_drop_within_the_margin_and_rows_on_one_side_only_pass():
    after = [{"model": "m", "task": "text_to_image", "strategy": None, "mrr": 0.49, "recall@1": 0.40}]
    assert metric_drops(after, BEFORE, margin=0.02) == []
    assert metric_drops([], BEFORE, margin=0.0) == []


def test_negative_margin_is_rejected():
    with pytest.raises(ValueError, match="margin"):
        metric_drops([], [], margin=-0.1)
