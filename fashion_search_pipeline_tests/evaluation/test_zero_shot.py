import numpy as np
import pytest

from fashion_search_pipeline.evaluation.zero_shot import (
    ZeroShotReport,
    classify,
    prompts_for,
    score_zero_shot,
)


def test_prompts_fill_the_template():
    assert prompts_for(["Dress", "T-shirt"]) == ["a photo of a Dress", "a photo of a T-shirt"]
    assert prompts_for(["Red"], "a {label} product, {label} colour") == ["a Red product, Red colour"]
    assert prompts_for(["{x}"], "photo of {label}") == ["photo of {x}"]


def test_template_without_label_placeholder_is_rejected():
    with pytest.raises(ValueError, match="label"):
        prompts_for(["Dress"], "a photo of a product")


def test_classify_uses_cosine_not_dot_product():
    labels = np.array([[1.0, 0.0], [0.0, 10.0]])
    images = np.array([[2.0, 0.5], [1.0, 3.0], [-1.0, 0.1]])
    # Image 0 has the larger dot product with label 1 (5 > 2) but the larger cosine with label 0.
    assert classify(images, labels).tolist() == [0, 1, 1]


def test_classify_breaks_ties_towards_the_first_label():
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert classify(np.array([[1.0, 1.0], [3.0, 0.0]]), labels).tolist() == [0, 0]


def test_classify_no_images():
    assert classify(np.zeros((0, 4)), np.eye(4)).shape == (0,)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.ones((2, 3)), np.ones((2, 4)), "dimension"),
        (np.ones((2, 3)), np.zeros((0, 3)), "at least one label"),
        (np.ones((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]), "label_vectors row 1"),
        (np.array([[0.0, 0, 0]]), np.ones((1, 3)), "image_vectors row 0"),
        (np.ones(3), np.ones((1, 3)), "matrix"),
    ],
)
def test_classify_rejects_bad_vectors(images, labels, message):
    with pytest.raises(ValueError, match=message):
        classify(images, labels)


def test_scores_against_hand_computed_values():
    true = ["a", "a", "a", "b", "b", None, "", "  ", "c"]
    predicted = ["a", "a", "b", "b", "a", "c", "a", "b", "a"]
    report = score_zero_shot("article_type", true, predicted, ["a", "b", "c", "d"])
    # Kept pairs (true, predicted): aa aa ab bb ba ca -> 3 correct of 6.
    assert report.n == 6
    assert report.skipped == 3
    assert report.accuracy == pytest.approx(3 / 6)
    # a: precision 2/4, recall 2/3. b: precision 1/2, recall 1/2. c: never predicted -> F1 0.
    # d occurs in neither truth nor predictions and is ignored.
    f1_a = 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)
    f1_b = 2 * (1 / 2) * (1 / 2) / (1 / 2 + 1 / 2)
    assert report.macro_f1 == pytest.approx((f1_a + f1_b + 0.0) / 3)
    assert report.majority_label == "a"
    assert report.majority_accuracy == pytest.approx(3 / 6)
    assert report.attribute == "article_type"
    assert report.labels == ["a", "b", "c", "d"]


def test_predicted_label_absent_from_the_truth_counts_in_macro_f1():
    report = score_zero_shot("colour", ["Red", "Red"], ["Red", "Blue"], ["Red", "Blue"])
    # Red: precision 1, recall 1/2 -> F1 2/3. Blue: precision 0, recall 0 -> F1 0.
    assert report.macro_f1 == pytest.approx((2 / 3 + 0) / 2)
    assert report.accuracy == 0.5


def test_majority_ties_go_to_the_alphabetically_first_label():
    report = score_zero_shot("gender", ["Women", "Men"], ["Men", "Men"], ["Men", "Women"])
    assert report.majority_label == "Men"
    assert report.majority_accuracy == 0.5


def test_no_labelled_items_gives_none():
    report = score_zero_shot("season", [None, ""], ["Summer", "Winter"], ["Summer", "Winter"])
    assert report == ZeroShotReport("season", ["Summer", "Winter"], None, None, None, None, 0, 2)


def test_predictions_outside_the_labels_are_rejected():
    with pytest.raises(ValueError, match=r"usage: predictions \['Party'\]"):
        score_zero_shot("usage", ["Casual"], ["Party"], ["Casual", "Sports"])


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="usage: 2 true labels but 1 predictions"):
        score_zero_shot("usage", ["Casual", "Sports"], ["Casual"], ["Casual", "Sports"])


def test_classification_feeds_scoring():
    labels = ["Men", "Women", "Unisex"]
    label_vectors = np.eye(3)
    image_vectors = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.5, 0.0]])
    predicted = [labels[i] for i in classify(image_vectors, label_vectors)]
    report = score_zero_shot("gender", ["Men", "Women", "Unisex", "Women"], predicted, labels)
    assert predicted == ["Men", "Women", "Unisex", "Men"]
    assert report.accuracy == 0.75
    # Men: P 1/2 R 1 -> 2/3; Women: P 1 R 1/2 -> 2/3; Unisex: 1.
    assert report.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
