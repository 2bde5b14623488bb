"""Fusion strategies on hand-made hit lists, checked against hand-computed scores."""

from __future__ import annotations

import polars as pl
import pytest

from fashion_search_pipeline.store.fusion import fuse

IMAGE = pl.DataFrame({
    "item_id": ["a", "b", "c"],
    "score": [0.9, 0.8, 0.7],
    "image_uri": ["s3://x/a.jpg", "s3://x/b.jpg", "s3://x/c.jpg"],
    "colour": ["Red", None, "Blue"],
})
TEXT = pl.DataFrame({
    "item_id": ["b", "d", "a"],
    "score": [0.6, 0.5, 0.4],
    "image_uri": ["s3://x/b.jpg", "s3://x/d.jpg", "s3://x/a.jpg"],
    "colour": ["Green", "Black", "Red"],
})
BOTH = {"image": IMAGE, "text": TEXT}


def ranking(fused: pl.DataFrame) -> list[tuple]:
    return list(zip(fused["item_id"], fused["score"], fused["matched"], fused["rank"]))


def assert_ranking(fused: pl.DataFrame, expected: list[tuple]) -> None:
    assert [(item, matched, rank) for item, _, matched, rank in ranking(fused)] == [
        (item, matched, rank) for item, _, matched, rank in expected
    ]
    assert fused["score"].to_list() == pytest.approx([score for _, score, _, _ in expected])


def test_rrf_sums_reciprocal_ranks_with_k_60():
    assert_ranking(fuse(BOTH, "rrf"), [
        ("b", 1 / 62 + 1 / 61, "image+text", 1),
        ("a", 1 / 61 + 1 / 63, "image+text", 2),
        ("d", 1 / 62, "text", 3),
        ("c", 1 / 63, "image", 4),
    ])


def test_raw_keeps_each_items_best_cosine():
    assert_ranking(fuse(BOTH, "raw"), [
        ("a", 0.9, "image+text", 1),
        ("b", 0.8, "image+text", 2),
        ("c", 0.7, "image", 3),
        ("d", 0.5, "text", 4),
    ])


def test_weighted_fills_a_missing_modality_with_its_lowest_score():
    # missing image score -> 0.7 (lowest image hit); missing text score -> 0.4
    assert_ranking(fuse(BOTH, "weighted"), [
        ("b", (0.8 + 0.6) / 2, "image+text", 1),
        ("a", (0.9 + 0.4) / 2, "image+text", 2),
        ("d", (0.7 + 0.5) / 2, "text", 3),
        ("c", (0.7 + 0.4) / 2, "image", 4),
    ])


def test_weighted_with_weights_and_zero_for_missing():
    fused = fuse(BOTH, "weighted", weights={"image": 3, "text": 1}, missing="zero")
    assert_ranking(fused, [
        ("a", 0.75 * 0.9 + 0.25 * 0.4, "image+text", 1),
        ("b", 0.75 * 0.8 + 0.25 * 0.6, "image+text", 2),
        ("c", 0.75 * 0.7, "image", 3),
        ("d", 0.25 * 0.5, "text", 4),
    ])


def test_rrf_weights_scale_each_modalitys_contribution():
    fused = fuse(BOTH, "rrf", weights={"image": 2.0, "text": 1.0})
    assert_ranking(fused, [
        ("a", 2 / 61 + 1 / 63, "image+text", 1),
        ("b", 2 / 62 + 1 / 61, "image+text", 2),
        ("c", 2 / 63, "image", 3),
        ("d", 1 / 62, "text", 4),
    ])


@pytest.mark.parametrize(("strategy", "expected"), [
    ("image", [("a", 0.9, "image", 1), ("b", 0.8, "image", 2), ("c", 0.7, "image", 3)]),
    ("text", [("b", 0.6, "text", 1), ("d", 0.5, "text", 2), ("a", 0.4, "text", 3)]),
])
def test_single_modality_strategies_use_one_table(strategy, expected):
    assert_ranking(fuse(BOTH, strategy), expected)


def test_k_keeps_the_top_items():
    assert_ranking(fuse(BOTH, "rrf", k=2), [
        ("b", 1 / 62 + 1 / 61, "image+text", 1),
        ("a", 1 / 61 + 1 / 63, "image+text", 2),
    ])


def test_ties_are_broken_by_item_id_within_and_across_modalities():
    image = pl.DataFrame({"item_id": ["q", "p", "z"], "score": [0.5, 0.5, 0.9]})
    text = pl.DataFrame({"item_id": ["y"], "score": [0.9]})
    # image ranks: z 1, p 2, q 3 (p before q by id); text: y 1; z and y tie at 1/61
    assert_ranking(fuse({"image": image, "text": text}, "rrf"), [
        ("y", 1 / 61, "text", 1),
        ("z", 1 / 61, "image", 2),
        ("p", 1 / 62, "image", 3),
        ("q", 1 / 63, "image", 4),
    ])
    reordered = {"text": text, "image": image.reverse()}
    assert ranking(fuse(reordered, "rrf")) == ranking(fuse({"image": image, "text": text}, "rrf"))


def test_an_item_repeated_within_a_modality_counts_once_with_its_best_score():
    image = pl.DataFrame({"item_id": ["a", "b", "a"], "score": [0.3, 0.5, 0.9]})
    assert_ranking(fuse({"image": image}, "rrf"), [
        ("a", 1 / 61, "image", 1),
        ("b", 1 / 62, "image", 2),
    ])


def test_payload_columns_come_first_non_null_image_then_text():
    fused = fuse(BOTH, "raw")
    assert fused.columns == ["item_id", "image_uri", "colour", "score", "matched", "rank"]
    by_item = dict(zip(fused["item_id"], fused["colour"]))
    assert by_item == {"a": "Red", "b": "Green", "c": "Blue", "d": "Black"}
    assert fused["item_id"].is_unique().all()


def test_payload_columns_missing_from_one_modality_are_kept():
    text = TEXT.with_columns(pl.Series("gender", ["Women", "Men", None]))
    fused = fuse({"image": IMAGE, "text": text}, "rrf")
    assert dict(zip(fused["item_id"], fused["gender"])) == {"a": None, "b": "Women", "c": None, "d": "Men"}


def test_no_hits_give_an_empty_frame_with_the_output_columns():
    fused = fuse({"image": IMAGE.head(0), "text": TEXT.head(0)}, "weighted")
    assert fused.height == 0
    assert fused.columns == ["item_id", "image_uri", "colour", "score", "matched", "rank"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"strategy": "best"}, "unknown fusion strategy 'best'"),
    ({"k": 0}, "k must be at least 1"),
    ({"missing": "mean"}, "unknown missing-score rule"),
    ({"weights": {"audio": 1.0}}, r"weights given for modalities without results: \['audio'\]"),
    ({"weights": {"image": 0.0, "text": 0.0}}, "positive sum"),
])
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        fuse(BOTH, **arguments)


def test_a_single_modality_strategy_without_its_results_is_an_error():
    with pytest.raises(ValueError, match="'image' needs image results"):
        fuse({"text": TEXT}, "image")


def test_results_without_a_score_column_are_named():
    with pytest.raises(ValueError, match=r"text results lack the columns \['score'\]"):
        fuse({"image": IMAGE, "text": TEXT.drop("score")})
