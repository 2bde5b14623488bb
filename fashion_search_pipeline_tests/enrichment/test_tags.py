"""Zero-shot tags: facet files, the abstain threshold, and tagging with a real tiny random-weight CLIP."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.enrichment.tags import (
    FacetConfigError,
    abstain_threshold,
    check_tag_columns,
    closest_labels,
    load_facets,
    parse_facets,
    tag_items,
)
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline_tests.test_search import ITEMS, product_photo


def test_the_shipped_facets_load_with_mirrored_attributes():
    config = load_facets()
    names = [facet.name for facet in config.facets]
    assert {"pattern", "sleeve"} <= set(names)
    assert {facet.mirrors for facet in config.facets} >= {"article_type", "colour", "usage"}
    assert config.target_precision == 0.9


def test_a_facet_with_an_empty_label_list_names_the_file_and_the_facet(tmp_path):
    path = tmp_path / "shop-facets.yaml"
    path.write_text("facets:\n  - name: pattern\n    labels: []\n")
    with pytest.raises(FacetConfigError, match=r"shop-facets.yaml: facet 'pattern' has an empty label list"):
        load_facets(path)
    with pytest.raises(FacetConfigError, match=r"facet 'sleeve' has an empty label list"):
        parse_facets("facets:\n  - name: sleeve\n    labels: ['  ']\n", "f.yaml")


def test_a_duplicate_facet_name_names_the_file_and_the_facet():
    text = "facets:\n  - name: pattern\n    labels: [a]\n  - name: pattern\n    labels: [b]\n"
    with pytest.raises(FacetConfigError, match=r"facets.yaml: facet 'pattern' is defined twice"):
        parse_facets(text, "facets.yaml")


@pytest.mark.parametrize("text, message", [
    ("facets: []", "non-empty 'facets' list"),
    ("facets:\n  - labels: [a]\n", "needs a 'name'"),
    ("facets:\n  - name: p\n    prompt: 'no placeholder'\n    labels: [a]\n", "must contain {label}"),
    ("target_precision: 2\nfacets:\n  - name: p\n    labels: [a]\n", "target_precision"),
])
def test_other_malformed_facet_files_are_rejected(text, message):
    with pytest.raises(FacetConfigError, match=message):
        parse_facets(text, "f.yaml")


def test_a_tag_column_colliding_with_a_catalog_attribute_is_a_clear_error():
    config = parse_facets("facets:\n  - name: colour\n    labels: [red, blue]\n", "f.yaml")
    collides = r"facet 'colour': tag column 'colour' collides with the catalog attribute"
    with pytest.raises(FacetConfigError, match=collides):
        check_tag_columns(config, ["gender", "colour"])
    reserved = parse_facets("facets:\n  - name: description\n    labels: [x]\n", "f.yaml")
    with pytest.raises(FacetConfigError, match="reserved column"):
        check_tag_columns(reserved, [])


def test_the_abstain_threshold_is_the_lowest_that_reaches_the_target_precision():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, False, True, False])
    # kept at >= 0.7: 3/3; at >= 0.5: 4/5 = 0.8; at >= 0.4: 4/6
    assert abstain_threshold(confidence, correct, 0.9) == (0.7, 1.0, 0.5)
    assert abstain_threshold(confidence, correct, 0.8) == (0.5, 0.8, 5 / 6)
    threshold, precision, coverage = abstain_threshold(confidence, np.zeros(6, dtype=bool), 0.9)
    assert threshold > 0.9 and precision is None and coverage == 0.0


def test_equal_confidences_are_kept_or_dropped_together():
    confidence = np.array([0.9, 0.5, 0.5])
    correct = np.array([True, True, False])
    assert abstain_threshold(confidence, correct, 0.9) == (0.9, 1.0, pytest.approx(1 / 3))


def test_the_confidence_is_the_margin_over_the_runner_up_label():
    labels, margins = closest_labels(np.array([[0.30, 0.10, 0.25], [0.0, 0.5, -0.2]]), ("a", "b", "c"))
    assert labels == ["a", "b"] and margins == pytest.approx([0.05, 0.5])
    assert closest_labels(np.array([[0.3], [0.1]]), ("only",)) == (["only", "only"], pytest.approx([0.0, 0.0]))


def test_a_mirrored_facet_chooses_its_threshold_on_the_calibration_items_only():
    # Prompts "a" and "b" encode to the axes; margins 0.8, 0.7, 0.5 for "a" and 0.2 for "b".
    image = np.array([[0.9, 0.1], [0.85, 0.15], [0.75, 0.25], [0.4, 0.6]])
    items = pl.DataFrame({"item_id": ["x1", "x2", "x3", "x4"], "colour": ["a", "b", "a", "a"]})
    config = parse_facets("facets:\n  - name: predicted_colour\n    mirrors: colour\n", "f.yaml")
    axes = {"a photo of a": [1.0, 0.0], "a photo of b": [0.0, 1.0]}
    encode = lambda texts: np.array([axes[text] for text in texts])  # noqa: E731
    _, (everything,) = tag_items(items, image, config, encode)
    assert (everything.threshold, everything.coverage, everything.calibration_items) == (pytest.approx(0.8), 0.25, 4)
    # x2 (a training item the model is confidently wrong on) no longer sets the bar
    tags, (calibrated,) = tag_items(items, image, config, encode, calibration_ids={"x1", "x3", "x4"})
    assert (calibrated.threshold, calibrated.precision, calibrated.calibration_items) == (pytest.approx(0.5), 1.0, 3)
    assert calibrated.coverage == pytest.approx(2 / 3)
    assert tags["predicted_colour"].to_list() == ["a", "a", "a", None]


def test_tag_items_with_a_real_model_writes_a_label_and_confidence_per_facet(tiny_checkpoint):
    spec = ModelSpec("tiny", str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32", batch_size=4)
    clip = load_clip(spec)
    image = encode_images(clip, [product_photo(i, item[-1]) for i, item in enumerate(ITEMS)])
    items = pl.DataFrame({"item_id": [item[0] for item in ITEMS], "colour": [item[3] for item in ITEMS]})
    config = parse_facets(
        "target_precision: 0.9\nfacets:\n  - name: pattern\n    labels: [striped, solid]\n"
        "  - name: predicted_colour\n    mirrors: colour\n", "f.yaml")
    tags, reports = tag_items(items, image, config, lambda texts: encode_texts(clip, texts))
    assert tags.columns == [
        "item_id", "pattern", "pattern_confidence", "predicted_colour", "predicted_colour_confidence"
    ]
    assert set(tags["pattern"]) <= {"striped", "solid"} and tags["pattern"].null_count() == 0
    assert ((tags["pattern_confidence"] >= 0) & (tags["pattern_confidence"] <= 2)).all()  # a cosine margin
    mirrored = next(r for r in reports if r.facet == "predicted_colour")
    kept = tags.filter(pl.col("predicted_colour").is_not_null())
    # the abstain threshold holds: what is kept reaches the target precision (or nothing is kept)
    if kept.height:
        truth = dict(zip(items["item_id"], items["colour"]))
        assert np.mean([truth[i] == t for i, t in zip(kept["item_id"], kept["predicted_colour"])]) >= 0.9
    assert mirrored.coverage == pytest.approx(kept.height / len(ITEMS))
    with pytest.raises(FacetConfigError, match="collides"):
        tag_items(items, image, parse_facets("facets:\n  - name: colour\n    labels: [a]\n", "f.yaml"), None)
