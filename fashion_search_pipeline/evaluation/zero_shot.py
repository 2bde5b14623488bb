"""Zero-shot attribute classification from embeddings (FashionCLIP benchmark style).

Each label becomes a text prompt; an image is assigned the label whose prompt
embedding is most cosine-similar to the image embedding. Scores are accuracy
and macro-F1, next to the majority-class baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ZeroShotReport:
    """Zero-shot scores for one attribute; metric values are None when n == 0.

    `n` counts the items scored, `skipped` those left out for a null or empty true label.
    """

    attribute: str
    labels: list[str]
    accuracy: float | None
    macro_f1: float | None
    majority_label: str | None
    majority_accuracy: float | None
    n: int
    skipped: int


def prompts_for(labels: Sequence[str], template: str = "a photo of a {label}") -> list[str]:
    """One text prompt per label: `template` with "{label}" replaced by the label."""
    if "{label}" not in template:
        raise ValueError(f"prompt template must contain '{{label}}', got {template!r}")
    return [template.replace("{label}", label) for label in labels]


def classify(image_vectors: np.ndarray, label_vectors: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar label vector for each image vector (ties: lowest index)."""
    images = _unit_rows("image_vectors", image_vectors)
    labels = _unit_rows("label_vectors", label_vectors)
    if images.shape[1] != labels.shape[1]:
        raise ValueError(
            f"image vectors have dimension {images.shape[1]} but label vectors {labels.shape[1]}"
        )
    if labels.shape[0] == 0:
        raise ValueError("label_vectors is empty: need at least one label")
    return np.argmax(images @ labels.T, axis=1)


def _unit_rows(name: str, vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"{name} must be a (rows, dimension) matrix, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{name} row {int(zero[0])} is a zero vector: cosine similarity is undefined")
    return vectors / norms


def score_zero_shot(
    attribute: str,
    true_labels: Sequence[str | None],
    predicted: Sequence[str],
    labels: Sequence[str],
) -> ZeroShotReport:
    """Accuracy, macro-F1 and majority baseline of `predicted` against `true_labels`.

    Items whose true label is null or blank are left out and counted in
    `skipped`. Every prediction must be one of `labels`. Macro-F1 averages the
    per-label F1 over the labels that occur in the truth or the predictions
    (a label with precision + recall = 0 scores 0). The majority baseline
    predicts the most frequent true label (ties: alphabetically first).
    """
    if len(true_labels) != len(predicted):
        raise ValueError(
            f"{attribute}: {len(true_labels)} true labels but {len(predicted)} predictions"
        )
    allowed = set(labels)
    unknown = sorted({p for p in predicted if p not in allowed})
    if unknown:
        raise ValueError(f"{attribute}: predictions {unknown} are not among the labels")

    pairs = [(t, p) for t, p in zip(true_labels, predicted) if t is not None and t.strip()]
    skipped = len(true_labels) - len(pairs)
    if not pairs:
        return ZeroShotReport(attribute, list(labels), None, None, None, None, 0, skipped)

    n = len(pairs)
    correct = Counter(t for t, p in pairs if t == p)
    truth = Counter(t for t, _ in pairs)
    guesses = Counter(p for _, p in pairs)
    f1 = [
        2 * correct[label] / (truth[label] + guesses[label])
        for label in truth.keys() | guesses.keys()
    ]
    majority_label, majority_count = min(truth.items(), key=lambda item: (-item[1], item[0]))
    return ZeroShotReport(
        attribute=attribute,
        labels=list(labels),
        accuracy=sum(correct.values()) / n,
        macro_f1=float(np.mean(f1)),
        majority_label=majority_label,
        majority_accuracy=majority_count / n,
        n=n,
        skipped=skipped,
    )
