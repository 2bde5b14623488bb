"""Fusion strategies on hand-made hit lists, checked against hand-computed scores."""

from __future__ import annotations

import polars as pl
import pytest

from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY, HYBRID_WEIGHTS, fuse

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


# ---- the keyword leg and the hybrid strategies ---------------------------------------------------

KEYWORD = pl.DataFrame({
    "item_id": ["d", "e"],
    "score": [4.0, 2.0],  # BM25: unbounded, so the hybrids scale it by the query's best
    "image_uri": ["s3://x/d.jpg", "s3://x/e.jpg"],
    "colour": ["Black", "White"],
})
ALL_LEGS = {**BOTH, "keyword": KEYWORD}
WEIGHTS = {"image": 1.0, "text": 1.0, "keyword": 2.0}


def test_the_hybrids_default_to_the_measured_weights():
    assert fuse(ALL_LEGS, "hybrid").equals(fuse(ALL_LEGS, "hybrid", weights=HYBRID_WEIGHTS))
    # keyword weight 8 of 10: scaled raw a 1, b .75, c .5, d 0, e 0 (a fifth of the score) and BM25 / best
    # d 1, e .5 (four fifths): d .8, e .4, a .2, b .15, c .1
    assert fuse(ALL_LEGS, "hybrid")["item_id"].to_list() == ["d", "e", "a", "b", "c"]


def test_hybrid_mixes_scaled_vector_scores_with_bm25_over_its_best():
    # raw over the vector legs: a .9, b .8, c .7, d .5; e (keyword only) counts the lowest, .5.
    # min-max over the fused items (.5 .. .9), then 1/2 of it + 1/2 of BM25 / 4 (weights 1, 1, 2).
    scaled = {item: (value - 0.5) / 0.4 for item, value in {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.5, "e": 0.5}.items()}
    bm25 = {"d": 1.0, "e": 0.5}
    expected = {item: 0.5 * scaled[item] + 0.5 * bm25.get(item, 0.0) for item in scaled}
    fused = fuse(ALL_LEGS, "hybrid", weights=WEIGHTS)
    assert fused["item_id"].to_list() == ["a", "d", "b", "c", "e"]  # ties (a, d and c, e) by item_id
    assert fused["score"].to_list() == pytest.approx([expected[item] for item in fused["item_id"]])
    assert fused.filter(pl.col("item_id") == "d")["matched"].item() == "text+keyword"
    assert fused.filter(pl.col("item_id") == "e")["colour"].item() == "White"


def test_hybrid_rrf_adds_the_keyword_legs_reciprocal_rank_with_its_weight():
    fused = fuse(ALL_LEGS, "hybrid_rrf", weights=WEIGHTS)
    expected = {"b": 1 / 62 + 1 / 61, "a": 1 / 61 + 1 / 63, "d": 1 / 62 + 2 / 61, "c": 1 / 63, "e": 2 / 62}
    assert fused["item_id"].to_list() == sorted(expected, key=lambda item: -expected[item])
    assert fused["score"].to_list() == pytest.approx(sorted(expected.values(), reverse=True))


def test_without_keyword_hits_the_hybrids_rank_as_their_vector_strategies():
    empty = KEYWORD.head(0)
    for hybrid in ("hybrid", "hybrid_rrf"):
        for legs in (BOTH, {**BOTH, "keyword": empty}):
            assert fuse(legs, hybrid)["item_id"].to_list() == fuse(BOTH, "rrf")["item_id"].to_list()


def test_vector_strategies_ignore_the_keyword_leg_and_keyword_uses_only_it():
    for strategy in ("raw", "rrf", "weighted", "image", "text"):
        assert fuse(ALL_LEGS, strategy).equals(fuse(BOTH, strategy))
    keyword = fuse(ALL_LEGS, "keyword")
    assert keyword["item_id"].to_list() == ["d", "e"]
    assert keyword["matched"].to_list() == ["keyword", "keyword"]


def test_hybrid_weights_move_the_balance_between_keyword_and_vectors():
    vectors_heavy = fuse(ALL_LEGS, "hybrid", weights={"image": 1, "text": 1, "keyword": 0.01})
    keyword_heavy = fuse(ALL_LEGS, "hybrid", weights={"image": 1, "text": 1, "keyword": 100})
    assert vectors_heavy["item_id"].to_list()[:2] == ["a", "b"]
    assert keyword_heavy["item_id"].to_list()[:2] == ["d", "e"]


def test_the_default_for_an_unevaluated_model_is_hybrid_and_ranks_photo_queries_as_rrf():
    # Measured on the shared fashion catalog with a trained domain-clip (docs/search-quality.md).
    assert DEFAULT_STRATEGY == "hybrid"
    assert fuse(ALL_LEGS).equals(fuse(ALL_LEGS, "hybrid"))
    assert fuse(BOTH)[["item_id", "rank"]].equals(fuse(BOTH, "rrf")[["item_id", "rank"]])  # no keyword leg
