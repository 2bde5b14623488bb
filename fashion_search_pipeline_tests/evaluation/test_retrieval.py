"""Retrieval tasks on hand-made vectors, checked by hand and against independent computations:
store.fusion.fuse for the fused rankings, a full sort and the textbook formulas for the metrics."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashion_search_pipeline.evaluation.evaluation_sets import EvaluationSet, captions_file_set
from fashion_search_pipeline.evaluation.retrieval import (
    CAPTIONS_PREFIX,
    IMAGE_SEARCH,
    IMAGE_TO_IMAGE,
    IMAGE_TO_TEXT,
    TEXT_SEARCH,
    TEXT_TO_IMAGE,
    evaluate_caption_pairs,
    evaluate_model,
    fused_score_sets,
)
from fashion_search_pipeline.evaluation.vectors import ModelVectors
from fashion_search_pipeline.store.fusion import STRATEGIES, fuse


def order_of(scores_row: np.ndarray) -> list[int]:
    """Candidates best first: score descending, ties to the lower index."""
    return sorted(range(len(scores_row)), key=lambda j: (-scores_row[j], j))


def fuse_row(image_row, text_row, strategy, depth, ids, keyword_row=None):
    """store.fusion.fuse over each leg's `depth` best hits (never -inf ones), as CatalogSearch calls it."""
    frames = {}
    legs = [("image", image_row), ("text", text_row)] + ([] if keyword_row is None else [("keyword", keyword_row)])
    for modality, row in legs:
        hits = [j for j in order_of(row) if np.isfinite(row[j])]
        hits = hits if depth is None else hits[:depth]
        frames[modality] = pl.DataFrame(
            {"item_id": [ids[j] for j in hits], "score": [float(row[j]) for j in hits]},
            schema={"item_id": pl.Utf8, "score": pl.Float64},
        )
    if strategy in frames:
        frames = {strategy: frames[strategy]}
    return fuse(frames, strategy, k=10_000)["item_id"].to_list()


def test_rrf_by_hand():
    # image ranks: c a b d; text ranks: b a d c. depth 2: image returns c, a; text returns b, a.
    image = np.array([[0.8, 0.1, 0.9, 0.0]])
    text = np.array([[0.5, 0.7, 0.1, 0.2]])
    scores = fused_score_sets(image, text, ("rrf",), depth=2)["rrf"]
    # a: 1/62 + 1/62; c: 1/61; b: 1/61 -> a, then b and c tie at 1/61 (b has the lower index); d last.
    assert order_of(scores[0]) == [0, 1, 2, 3]
    # raw: best returned cosine (c 0.9, a 0.8, b 0.7); d, returned by neither table, comes last.
    raw = fused_score_sets(image, text, ("raw",), depth=2)["raw"]
    assert order_of(raw[0]) == [2, 0, 1, 3]


def test_weighted_fills_a_missing_table_with_its_lowest_returned_score():
    image = np.array([[0.9, 0.8, 0.1]])
    text = np.array([[0.1, 0.2, 0.95]])
    # depth 1: image returns item 0 (0.9), text returns item 2 (0.95).
    # item 0: (0.9 + 0.95) / 2 ; item 2: (0.9 + 0.95) / 2 -> tie, lower index first; item 1 follows.
    assert order_of(fused_score_sets(image, text, ("weighted",), depth=1)["weighted"][0]) == [0, 2, 1]


def test_single_table_strategies_return_that_tables_cosines():
    image, text = np.array([[0.3, 0.6]]), np.array([[0.9, 0.1]])
    assert fused_score_sets(image, text, ("image",))["image"].tolist() == image.tolist()
    assert fused_score_sets(image, text, ("text",))["text"].tolist() == text.tolist()


def test_bad_fusion_input_is_rejected():
    with pytest.raises(ValueError, match="unknown fusion strateg"):
        fused_score_sets(np.zeros((1, 2)), np.zeros((1, 2)), ("borda",))
    with pytest.raises(ValueError, match="one shape"):
        fused_score_sets(np.zeros((1, 2)), np.zeros((1, 3)), ("rrf",))


@st.composite
def score_pairs(draw):
    n_queries = draw(st.integers(1, 4))
    n_candidates = draw(st.integers(1, 14))
    # Few distinct values so ties are common; -inf marks a candidate a table never returns.
    values = st.sampled_from([-np.inf, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
    image = np.array([[draw(values) for _ in range(n_candidates)] for _ in range(n_queries)])
    text = np.array([[draw(values) for _ in range(n_candidates)] for _ in range(n_queries)])
    depth = draw(st.one_of(st.none(), st.integers(1, n_candidates + 2)))
    return image, text, depth


@settings(max_examples=100, deadline=None)
@given(score_pairs())
def test_fused_rankings_agree_with_store_fusion(problem):
    image, text, depth = problem
    ids = [f"item-{j:02d}" for j in range(image.shape[1])]
    fused = fused_score_sets(image, text, depth=depth)
    assert set(fused) == set(STRATEGIES) - {"keyword"}
    for strategy, scores in fused.items():
        for row in range(image.shape[0]):
            expected = fuse_row(image[row], text[row], strategy, depth, ids)
            assert [ids[j] for j in order_of(scores[row])][: len(expected)] == expected, strategy


@settings(max_examples=100, deadline=None)
@given(score_pairs(), st.data())
def test_fused_rankings_with_a_keyword_leg_agree_with_store_fusion(problem, data):
    image, text, depth = problem
    # BM25 scores are positive; -inf: the keyword leg did not return the candidate.
    values = st.sampled_from([-np.inf, -np.inf, 0.5, 1.0, 2.5, 4.0])
    keyword = np.array([[data.draw(values) for _ in range(image.shape[1])] for _ in range(image.shape[0])])
    ids = [f"item-{j:02d}" for j in range(image.shape[1])]
    fused = fused_score_sets(image, text, depth=depth, keyword=keyword)
    assert set(fused) == set(STRATEGIES)
    for strategy, scores in fused.items():
        for row in range(image.shape[0]):
            expected = fuse_row(image[row], text[row], strategy, depth, ids, keyword[row])
            assert [ids[j] for j in order_of(scores[row])][: len(expected)] == expected, strategy


# ---- catalog tasks ------------------------------------------------------------------------------


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def vectors() -> ModelVectors:
    """Eight items in 6 dimensions with two label groups and one duplicate description."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(8, 6))
    items = pl.DataFrame(
        {
            "item_id": [f"p{i}" for i in range(8)],
            "image_uri": [f"/images/p{i}.jpg" for i in range(8)],
            "description": ["red dress", "Red  Dress", "blue jeans", "black cap", "white shoes", "green tee",
                            "pink bag", "grey socks"],
            "gender": ["Women", "Women", "Men", "Men", "Women", "Men", "Women", None],
            "colour": ["Red", "Red", "Blue", "Blue", "Red", "Blue", "Pink", "Grey"],
        }
    )
    return ModelVectors(
        model="m",
        items=items,
        image=unit_rows(base + 0.8 * rng.normal(size=base.shape)),
        text=unit_rows(base + 0.8 * rng.normal(size=base.shape)),
        unpaired=0,
        versions=frozenset({"v1"}),
    )


def reference_metrics(scores: np.ndarray, relevant: list[set[int]]):
    """A full sort per query and the textbook MRR, recall@k and median first rank (queries with relevant items)."""
    per_query = []
    for row, items in zip(scores, relevant):
        if items:
            order = order_of(row)
            per_query.append(sorted(order.index(i) + 1 for i in items))
    mrr = sum(1 / r[0] for r in per_query) / len(per_query)
    recall = {k: sum(len([x for x in r if x <= k]) / len(r) for r in per_query) / len(per_query) for k in (1, 5, 10)}
    ndcg = sum(
        sum(1 / math.log2(x + 1) for x in r if x <= 10) / sum(1 / math.log2(i + 2) for i in range(min(len(r), 10)))
        for r in per_query
    ) / len(per_query)
    return mrr, recall, ndcg, float(np.median([r[0] for r in per_query])), len(per_query)


def result_for(results, task, strategy=None):
    return next(r for r in results if r.task == task and r.strategy == strategy)


def assert_matches_reference(result, scores, relevant):
    mrr, recall, ndcg, median, n = reference_metrics(scores, relevant)
    assert result.metrics.queries == n
    assert result.metrics.mrr == pytest.approx(mrr)
    assert {k: result.metrics.recall[k] for k in (1, 5, 10)} == {k: pytest.approx(v) for k, v in recall.items()}
    assert result.metrics.ndcg == pytest.approx(ndcg)
    assert result.metrics.median_rank == pytest.approx(median)


def test_description_and_image_directions_agree_with_a_reference(vectors):
    results, notes = evaluate_model(vectors, label_columns=("gender", "colour"))
    # The two red dresses share a normalised description, so each one's query finds both.
    relevant = [{0, 1}, {0, 1}, {2}, {3}, {4}, {5}, {6}, {7}]
    assert_matches_reference(result_for(results, TEXT_TO_IMAGE), vectors.text @ vectors.image.T, relevant)
    assert_matches_reference(result_for(results, IMAGE_TO_TEXT), vectors.image @ vectors.text.T, relevant)
    forward = result_for(results, TEXT_TO_IMAGE)
    assert forward.queries[1] == "Red  Dress"
    assert forward.top[0] == [f"p{j}" for j in order_of(vectors.text[0] @ vectors.image.T)]
    assert any("not loadable" in note for note in notes)


def test_image_to_image_leaves_the_query_out_and_skips_items_without_a_match(vectors):
    results, _ = evaluate_model(vectors, label_columns=("gender", "colour"))
    scores = vectors.image @ vectors.image.T
    np.fill_diagonal(scores, -np.inf)
    # (Women, Red): 0, 1, 4; (Men, Blue): 2, 3, 5; item 6 is alone, item 7 has no gender.
    relevant = [{1, 4}, {0, 4}, {3, 5}, {2, 5}, {0, 1}, {2, 3}, set(), set()]
    result = result_for(results, IMAGE_TO_IMAGE)
    assert_matches_reference(result, scores, relevant)
    assert result.metrics.skipped == 2
    assert result_for(results, IMAGE_SEARCH, "image").metrics == result.metrics
    for each in (r for r in results if r.query_kind == "image" and r.candidate_kind != "text"):
        assert all(query not in top for query, top in zip(each.queries, each.top)), each.strategy


def test_label_queries_and_captions_are_searched_with_every_fusion(vectors):
    encoded = {}

    def encode(texts):
        encoded.setdefault("texts", []).extend(texts)
        rng = np.random.default_rng(len(encoded["texts"]))
        return unit_rows(rng.normal(size=(len(texts), 6)))

    captions = captions_file_set(
        b"image,caption\nimages/p2.jpg,denim trousers\nimages/p9.jpg,an unknown item\np3.jpg,a cap\n",
        vectors.item_ids,
        name="extra.csv",
    )
    results, notes = evaluate_model(
        vectors, encode_text=encode, caption_sets={"extra.csv": captions}, label_columns=("gender", "colour")
    )
    assert notes == ["model m: no 'article_type' column, so shopper_search is left out"]
    assert encoded["texts"] == ["Men Blue", "Women Pink", "Women Red", "denim trousers", "a cap"]
    search = {r.strategy: r for r in results if r.task == TEXT_SEARCH}
    assert set(search) == set(STRATEGIES) - {"keyword"}  # no keyword leg given
    assert search["rrf"].queries == ["Men Blue", "Women Pink", "Women Red"]
    caption = {r.strategy: r for r in results if r.task == f"{CAPTIONS_PREFIX}extra.csv"}
    assert set(caption) == set(STRATEGIES) - {"keyword"}
    assert caption["raw"].metrics.queries == 2
    assert caption["raw"].metrics.skipped == 1  # the caption of p9, not a catalog item


def test_text_queries_rank_as_fusion_over_both_tables(vectors):
    query = unit_rows(np.random.default_rng(9).normal(size=(1, 6)))
    results, _ = evaluate_model(
        vectors,
        encode_text=lambda texts: np.repeat(query, len(texts), axis=0),
        label_columns=("gender",),
        depth=3,
    )
    for result in (r for r in results if r.task == TEXT_SEARCH):
        expected = fuse_row(query[0] @ vectors.image.T, query[0] @ vectors.text.T, result.strategy, 3, vectors.item_ids)
        assert result.top[0][: len(expected)] == expected


def test_max_queries_samples_a_seeded_subset(vectors):
    first, _ = evaluate_model(vectors, label_columns=(), max_queries=3, seed=1)
    again, _ = evaluate_model(vectors, label_columns=(), max_queries=3, seed=1)
    forward = result_for(first, TEXT_TO_IMAGE)
    assert forward.metrics.queries == 3
    assert forward.queries == result_for(again, TEXT_TO_IMAGE).queries


def test_no_label_columns_leaves_label_tasks_out_with_a_note(vectors):
    results, notes = evaluate_model(vectors, label_columns=("season",))
    assert {r.task for r in results} == {TEXT_TO_IMAGE, IMAGE_TO_TEXT}
    assert "no label column" in notes[0]


def test_an_empty_catalog_gives_a_note_and_no_results():
    empty = ModelVectors(
        "m",
        pl.DataFrame(schema={"item_id": pl.Utf8, "image_uri": pl.Utf8, "description": pl.Utf8}),
        np.zeros((0, 0), dtype=np.float32),
        np.zeros((0, 0), dtype=np.float32),
        0,
        frozenset(),
    )
    results, notes = evaluate_model(empty)
    assert results == []
    assert notes == ["model m: its tables hold no items, nothing to evaluate"]


def test_caption_pairs_rank_images_and_all_captions_of_an_image():
    image_ids = ["a", "b", "c"]
    images = unit_rows(np.eye(3))
    captions = EvaluationSet("c", ["a1", "a2", "b1", "c1"], [{"a"}, {"a"}, {"b"}, {"c"}], skipped=2)
    caption_vectors = unit_rows(np.array([[1.0, 0.1, 0], [0.2, 1.0, 0], [0, 1.0, 0.1], [0, 0.3, 1.0]]))
    results = evaluate_caption_pairs("m", image_ids, images, captions, caption_vectors)
    forward = result_for(results, TEXT_TO_IMAGE)
    # caption a2 ranks image b first, a second; the others find their image first.
    assert [r.tolist() for r in forward.ranks] == [[1], [2], [1], [1]]
    assert forward.metrics.mrr == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert forward.metrics.skipped == 2
    backward = result_for(results, IMAGE_TO_TEXT)
    # image a: a1 (0.995) and a2 (0.196) beat b1 and c1 (0); images b and c find their one caption first.
    assert [r.tolist() for r in backward.ranks] == [[1, 2], [1], [1]]
    assert backward.metrics.recall[1] == pytest.approx((0.5 + 1 + 1) / 3)
    assert backward.top[0][:2] == ["a#0", "a#1"]
