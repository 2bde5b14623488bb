import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.evaluation.attributes import classify_attributes

LABELS = ("Red", "Blue", "Green")


class LabelEncoder:
    """Prompt -> the unit vector of the colour word it contains (test data standing in for a text tower)."""

    def __init__(self):
        self.seen = []

    def __call__(self, prompts):
        self.seen.extend(prompts)
        return np.array([[float(label in prompt) for label in LABELS] for prompt in prompts])


def test_each_image_gets_the_label_of_its_nearest_prompt():
    encode = LabelEncoder()
    items = pl.DataFrame(
        {
            "colour": ["Red", "Red", "Blue", "Green", None, "Red"],
            "season": ["Fall"] * 6,
            "description": ["x"] * 6,
        }
    )
    # image 1 looks blue although it is red; image 4 has no true label.
    images = np.array([[1, 0.1, 0], [0.1, 1, 0], [0, 1, 0], [0, 0.2, 1], [1, 0, 0], [0.9, 0, 0.1]])
    reports, notes = classify_attributes(images, items, encode, attributes=("colour", "season", "usage"))
    (colour,) = reports
    assert encode.seen == [
        "a photo of a Blue coloured product",
        "a photo of a Green coloured product",
        "a photo of a Red coloured product",
    ]
    assert colour.labels == ["Blue", "Green", "Red"]
    assert (colour.n, colour.skipped) == (5, 1)
    assert colour.accuracy == pytest.approx(4 / 5)
    assert colour.majority_label == "Red"
    assert colour.majority_accuracy == pytest.approx(3 / 5)
    # per-label F1: Red 2*2/(3+2), Blue 2*1/(1+2), Green 1.
    assert colour.macro_f1 == pytest.approx(np.mean([4 / 5, 2 / 3, 1.0]))
    assert notes == ["zero-shot season: 1 distinct labels, left out (needs 2 to 500)"]


def test_vectors_and_items_must_line_up():
    with pytest.raises(ValueError, match="3 image vectors for 2 items"):
        classify_attributes(np.eye(3), pl.DataFrame({"colour": ["Red", "Blue"]}), LabelEncoder())
