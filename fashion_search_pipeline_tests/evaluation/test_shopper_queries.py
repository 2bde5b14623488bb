"""Shopper-style queries generated from attributes, a shop's judged query file, and the shopper
task with the keyword leg in evaluate_model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.evaluation.retrieval import evaluate_model
from fashion_search_pipeline.evaluation.shopper_queries import (
    KINDS,
    SHOPPER_SEARCH,
    TYPE_PHRASES,
    brand_words,
    read_judged_queries,
    shopper_queries,
)
from fashion_search_pipeline.evaluation.vectors import ModelVectors

ITEMS = pl.DataFrame({
    "item_id": [f"p{i}" for i in range(8)],
    "image_uri": [f"/img/p{i}.jpg" for i in range(8)],
    "description": ["Puma Men White Sneakers", "Puma Women Black Sneakers", "Puma Men Red Tee",
                    "Nike Men Black Running Shoes",
                    "Nike Women Black Running Shoes", "Nike Unisex Blue Tee", "Adidas Men Navy Track Pants", "tee"],
    "gender": ["Men", "Women", "Men", "Men", "Women", "Unisex", "Men", "Men"],
    "colour": ["White", "Black", "Red", "Black", "Black", "Blue", "Navy Blue", "Red"],
    "article_type": ["Casual Shoes", "Casual Shoes", "Tshirts", "Sports Shoes", "Sports Shoes", "Tshirts",
                     "Track Pants", "Tshirts"],
})


def test_brand_words_are_first_description_words_shared_by_several_items():
    assert brand_words(ITEMS) == {"p0": "puma", "p1": "puma", "p2": "puma", "p3": "nike", "p4": "nike", "p5": "nike"}


def test_queries_are_shopper_phrasings_never_a_description_with_attribute_relevance():
    queries, kinds = shopper_queries(ITEMS, per_kind=100)
    descriptions = {" ".join(d.casefold().split()) for d in ITEMS["description"]}
    assert set(kinds) == set(KINDS)
    assert len(set(queries.queries)) == len(queries.queries)
    assert not descriptions & {" ".join(q.casefold().split()) for q in queries.queries}
    by_text = dict(zip(queries.queries, queries.relevant))
    for text, relevant in by_text.items():
        assert relevant, text
    # every query of the Sports Shoes type uses one of its phrases, and finds both running shoes
    sports = [t for t, k in zip(queries.queries, kinds) if k == "type" and by_text[t] == {"p3", "p4"}]
    assert len(sports) == 1 and any(phrase in sports[0] for phrase in TYPE_PHRASES["Sports Shoes"])
    # a men's tee query also finds the unisex tee, never the women's items
    mens_tees = [t for t, k in zip(queries.queries, kinds) if k == "type_gender" and "p2" in by_text[t]]
    assert mens_tees and by_text[mens_tees[0]] == {"p2", "p5", "p7"}
    brand = [t for t, k in zip(queries.queries, kinds) if k == "brand_colour_type" and t.startswith("nike black")]
    assert brand and by_text[brand[0]] == {"p3", "p4"}


def test_generation_is_seeded():
    assert shopper_queries(ITEMS, seed=3)[0].queries == shopper_queries(ITEMS, seed=3)[0].queries


def test_items_without_an_article_type_column_are_a_clear_error():
    with pytest.raises(ValueError, match="article_type"):
        shopper_queries(ITEMS.drop("article_type"))


def test_judged_queries_take_ids_or_attribute_constraints_and_count_bad_rows():
    data = (
        b"query,relevant_item_ids,attributes\n"
        b"white puma sneakers,p0,\n"
        b"black running shoes,,article_type=Sports Shoes;colour=Black\n"
        b"anything tee,p2|p9,article_type=Tshirts\n"
        b",p1,\n"
        b"nothing known,p99,\n"
        b"bad column,,size=XL\n"
        b"too,many,fields,here\n"
    )
    judged = read_judged_queries(data, ITEMS)
    assert judged.queries == ["white puma sneakers", "black running shoes", "anything tee"]
    assert judged.relevant == [{"p0"}, {"p3", "p4"}, {"p2", "p5", "p7"}]
    assert judged.skipped == 4
    assert judged.skipped_reasons == {"empty_query": 1, "unknown_item": 1, "malformed_record": 2}
    with pytest.raises(ValueError, match="needs a 'query' column"):
        read_judged_queries(b"text,ids\nx,p1\n", ITEMS)


def test_the_shopper_task_is_measured_with_the_keyword_leg_and_per_query_kind():
    rng = np.random.default_rng(0)
    unit = lambda m: (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    image, text = unit(rng.normal(size=(8, 6))), unit(rng.normal(size=(8, 6)))
    vectors = ModelVectors("m", ITEMS, image, text, 0, frozenset({"v"}))
    words = [set(d.casefold().split()) for d in ITEMS["description"]]

    def keyword_scores(queries, ids):
        # BM25 stand-in with the same contract: matching-word counts, -inf where no word matches
        scores = np.array([[len(set(q.split()) & w) for w in words] for q in queries], dtype=float)
        return np.where(scores > 0, scores, -np.inf)

    results, _ = evaluate_model(
        vectors, encode_text=lambda texts: unit(rng.normal(size=(len(texts), 6))), keyword_scores=keyword_scores
    )
    shopper = {r.strategy: r for r in results if r.task == SHOPPER_SEARCH}
    assert {"keyword", "hybrid", "hybrid_rrf", "raw"} <= set(shopper)
    per_kind = [r for r in results if r.task.startswith(f"{SHOPPER_SEARCH}/") and r.strategy == "keyword"]
    assert sum(r.metrics.queries for r in per_kind) == shopper["keyword"].metrics.queries
    assert {r.task.split("/")[1] for r in per_kind} <= set(KINDS)
