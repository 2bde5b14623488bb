from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.evaluation.evaluation_sets import (
    EvaluationSet,
    captions_file_set,
    catalog_text_to_image,
    image_file_stem,
)
from fashion_search_pipeline.evaluation.metrics import compute_metrics, ranks_from_scores

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FLICKR_CAPTIONS = SHARED_DATA / "flickr8k-1k" / "captions.csv"


def catalog(rows):
    return pl.DataFrame(
        rows, schema={"item_id": pl.Utf8, "description": pl.Utf8, "colour": pl.Utf8}, orient="row"
    )


def test_every_description_is_a_query_for_all_items_sharing_it():
    items = catalog(
        [
            ("a", "Red Dress", "Red"),
            ("b", " red  DRESS", "Red"),
            ("c", "Blue Shirt", "Blue"),
            ("d", None, "Blue"),
            ("e", "   ", "Blue"),
            (None, "Green Scarf", "Green"),
        ]
    )
    evaluation = catalog_text_to_image(items)
    assert evaluation.name == "catalog_text_to_image"
    assert evaluation.queries == ["Red Dress", " red  DRESS", "Blue Shirt"]
    assert evaluation.relevant == [{"a", "b"}, {"a", "b"}, {"c"}]
    assert evaluation.skipped == 3
    assert evaluation.skipped_reasons == {"empty_query": 2, "missing_item_id": 1}
    assert len(evaluation) == 3


def test_relevance_sets_are_independent_objects():
    evaluation = catalog_text_to_image(catalog([("a", "Dress", None), ("b", "dress", None)]))
    evaluation.relevant[0].add("z")
    assert evaluation.relevant[1] == {"a", "b"}


def test_catalog_without_description_is_rejected():
    with pytest.raises(ValueError, match="'description'"):
        catalog_text_to_image(pl.DataFrame({"item_id": ["a"]}))


def test_catalog_with_repeated_item_ids_is_rejected():
    with pytest.raises(ValueError, match=r"repeat: \['a'\]"):
        catalog_text_to_image(catalog([("a", "Dress", None), ("a", "Shirt", None)]))


def test_empty_catalog_gives_an_empty_set():
    evaluation = catalog_text_to_image(catalog([]))
    assert (evaluation.queries, evaluation.relevant, evaluation.skipped) == ([], [], 0)


def test_relevant_indices_point_into_the_candidates():
    evaluation = EvaluationSet("s", ["q1", "q2", "q3"], [{"a", "b"}, {"c"}, {"gone"}])
    assert evaluation.relevant_indices(["c", "a", "z", "b"]) == [{1, 3}, {0}, set()]


def test_repeated_candidate_ids_are_rejected():
    evaluation = EvaluationSet("s", ["q"], [{"a"}])
    with pytest.raises(ValueError, match=r"repeat: \['a'\]"):
        evaluation.relevant_indices(["a", "b", "a"])


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 queries but 1 relevance sets"):
        EvaluationSet("s", ["q1", "q2"], [{"a"}])


def test_catalog_set_drives_the_metrics():
    items = catalog([("a", "Red Dress", None), ("b", "red dress", None), ("c", "Blue Shirt", None)])
    evaluation = catalog_text_to_image(items)
    candidates = ["c", "b", "a"]
    # Rows: queries; columns: candidates c, b, a.
    scores = np.array([[0.1, 0.9, 0.8], [0.1, 0.9, 0.8], [0.5, 0.6, 0.0]])
    ranks = ranks_from_scores(scores, evaluation.relevant_indices(candidates))
    assert [r.tolist() for r in ranks] == [[1, 2], [1, 2], [2]]
    result = compute_metrics(ranks)
    assert result.mrr == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert result.recall[1] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_image_file_stem():
    assert image_file_stem("images/1000268201_693b08cb0e.jpg") == "1000268201_693b08cb0e"
    assert image_file_stem("a\\b\\c.png") == "c"
    assert image_file_stem("plain") == "plain"


CAPTIONS = (
    b"\xef\xbb\xbfImage,Caption\r\n"
    b'img/1.jpg,"A dog, running"\r\n'
    b'1.jpg,"Two lines\nof text"\r\n'
    b"2.jpg,   \r\n"
    b"9.jpg,unknown photo\r\n"
    b"3.jpg,too,many\r\n"
    b"\r\n"
    b"4.jpg,caf\xe9\r\n"
    b",no image\r\n"
    b"2.jpg, padded caption \r\n"
)


def test_captions_become_queries_and_bad_records_are_counted():
    evaluation = captions_file_set(CAPTIONS, {"1", "2", "3", "4"})
    assert evaluation.name == "captions"
    assert evaluation.queries == ["A dog, running", "Two lines\nof text", "padded caption"]
    assert evaluation.relevant == [{"1"}, {"1"}, {"2"}]
    assert evaluation.skipped == 5
    assert evaluation.skipped_reasons == {
        "empty_query": 1,
        "unknown_item": 1,
        "malformed_record": 1,
        "not_utf8": 1,
        "missing_item_id": 1,
    }


def test_captions_with_other_columns_and_ids():
    data = b"text,photo\nred shoes,p7_front.jpg\nblue bag,p8_side.jpg\n"
    evaluation = captions_file_set(
        data,
        ["p7"],
        image_column="photo",
        caption_column="text",
        id_from_image=lambda image: image.split("_")[0],
        name="shoes",
    )
    assert (evaluation.name, evaluation.queries, evaluation.relevant) == ("shoes", ["red shoes"], [{"p7"}])
    assert evaluation.skipped_reasons == {"unknown_item": 1}


def test_captions_file_without_the_caption_column_is_rejected():
    with pytest.raises(ValueError, match="no 'caption' column"):
        captions_file_set(b"image,text\n1.jpg,hello\n", {"1"})


def test_empty_captions_file_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        captions_file_set(b"", {"1"})


@pytest.mark.skipif(not FLICKR_CAPTIONS.exists(), reason=f"shared data absent: {FLICKR_CAPTIONS}")
def test_real_flickr8k_captions():
    data = FLICKR_CAPTIONS.read_bytes()
    images = {path.stem for path in (FLICKR_CAPTIONS.parent / "images").iterdir()}
    evaluation = captions_file_set(data, images, name="flickr8k-1k")
    assert evaluation.skipped == 0
    assert len(evaluation) == 5000
    per_image = Counter(item for items in evaluation.relevant for item in items)
    assert len(per_image) == 1000
    assert set(per_image.values()) == {5}
    assert all(len(items) == 1 for items in evaluation.relevant)
    assert "A dog shakes its head near the shore , a red ball next to it ." in evaluation.queries

    subset = set(sorted(images)[:10])
    partial = captions_file_set(data, subset)
    assert len(partial) == 50
    assert partial.skipped_reasons == {"unknown_item": 4950}
