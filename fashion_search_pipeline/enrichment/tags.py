"""Zero-shot tags as facets: labels nobody entered, predicted from each item's image embedding.

Facets come from a YAML file (facets.yaml ships a default set): name, prompt template, labels,
and optionally the catalog attribute the facet `mirrors`. A label's prompt is encoded once per
model; an item gets the label whose prompt its image is closest to (cosine), and as its confidence
the margin over the runner-up label (top-1 minus top-2 cosine, 0 to 2). A softmax probability at
CLIP's logit scale of 100 would saturate: for a trained model it is exactly 1.0 for up to 45 % of
the items, leaving no threshold between "all of those" and "none". A mirrored facet abstains (null
tag) below the lowest confidence at which its tags reach the target precision against the
attribute, measured on the calibration items (for a trained model, the items its training held out;
otherwise all); the others tag every item.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from fashion_search_pipeline.columns import ITEM_ID, RESERVED_COLUMNS

DEFAULT_FACETS_FILE = "facets.yaml"
DEFAULT_TARGET_PRECISION = 0.9
CONFIDENCE_SUFFIX = "_confidence"


class FacetConfigError(ValueError):
    """A facet file that cannot be used, naming the file and the facet."""


@dataclass(frozen=True)
class Facet:
    """One facet: its column name, prompt template ("{label}") and labels; `mirrors` names the
    catalog attribute it predicts (labels then default to that attribute's values)."""

    name: str
    prompt: str
    labels: tuple[str, ...] = ()
    mirrors: str | None = None

    @property
    def confidence_column(self) -> str:
        return f"{self.name}{CONFIDENCE_SUFFIX}"


@dataclass(frozen=True)
class FacetConfig:
    facets: tuple[Facet, ...]
    target_precision: float = DEFAULT_TARGET_PRECISION
    source: str = DEFAULT_FACETS_FILE


@dataclass
class FacetReport:
    """What tagging one facet measured: the threshold, and for a mirrored facet the precision
    and coverage at it (and the accuracy without abstaining) on the `calibration_items`."""

    facet: str
    mirrors: str | None
    threshold: float
    items: int
    calibration_items: int = 0
    coverage: float | None = None
    precision: float | None = None
    accuracy: float | None = None
    label_counts: dict[str, int] = field(default_factory=dict)


def load_facets(path: str | Path | None = None) -> FacetConfig:
    """The facets of a YAML file (None: the shipped default set)."""
    if path is None:
        source = f"{__package__}/{DEFAULT_FACETS_FILE}"
        text = resources.files(__package__).joinpath(DEFAULT_FACETS_FILE).read_text(encoding="utf-8")
    else:
        source, text = str(path), Path(path).read_text(encoding="utf-8")
    return parse_facets(text, source)


def parse_facets(text: str, source: str) -> FacetConfig:
    """Validate a facet file's text; errors name the file (`source`) and the facet."""
    data = yaml.safe_load(text) or {}
    entries = data.get("facets") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise FacetConfigError(f"{source}: expected a non-empty 'facets' list")
    facets, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.isidentifier():
            raise FacetConfigError(f"{source}: facet #{number} needs a 'name' made of letters, digits and _")
        if name in seen:
            raise FacetConfigError(f"{source}: facet {name!r} is defined twice")
        seen.add(name)
        prompt = entry.get("prompt", "a photo of {label}")
        if "{label}" not in str(prompt):
            raise FacetConfigError(f"{source}: facet {name!r}: the prompt must contain {{label}}, got {prompt!r}")
        labels = entry.get("labels")
        mirrors = entry.get("mirrors")
        if labels is None and mirrors is None or labels is not None and (
            not isinstance(labels, list) or not [label for label in labels if str(label).strip()]
        ):
            raise FacetConfigError(f"{source}: facet {name!r} has an empty label list")
        cleaned = tuple(dict.fromkeys(str(label).strip() for label in labels or [] if str(label).strip()))
        facets.append(Facet(name, str(prompt), cleaned, mirrors))
    precision = float(data.get("target_precision", DEFAULT_TARGET_PRECISION))
    if not 0 < precision <= 1:
        raise FacetConfigError(f"{source}: target_precision must be in (0, 1], got {precision}")
    return FacetConfig(tuple(facets), precision, source)


def check_tag_columns(config: FacetConfig, attribute_names: Collection[str]) -> None:
    """A clear error when a facet's columns would collide with a catalog attribute or a reserved column."""
    for facet in config.facets:
        for column in (facet.name, facet.confidence_column):
            if column in attribute_names:
                raise FacetConfigError(
                    f"{config.source}: facet {facet.name!r}: tag column {column!r} collides with the catalog "
                    "attribute of that name; rename the facet"
                )
            if column in RESERVED_COLUMNS:
                raise FacetConfigError(f"{config.source}: facet {facet.name!r}: {column!r} is a reserved column")


def facet_labels(facet: Facet, items: pl.DataFrame) -> tuple[str, ...]:
    """The facet's labels; for a mirrored facet without labels, the attribute's values."""
    if facet.labels:
        return facet.labels
    if facet.mirrors not in items.columns:
        return ()
    return tuple(sorted(v for v in items[facet.mirrors].drop_nulls().unique().to_list() if v.strip()))


def tag_items(
    items: pl.DataFrame,
    image: np.ndarray,
    config: FacetConfig,
    encode_texts: Callable[[Sequence[str]], np.ndarray],
    calibration_ids: Collection[str] | None = None,
) -> tuple[pl.DataFrame, list[FacetReport]]:
    """item_id plus <facet> and <facet>_confidence columns for every facet, and what each measured.
    `image` holds the items' unit image vectors; `encode_texts` the model's text encoder;
    `calibration_ids` the items a mirrored facet's threshold is chosen on (None: all items)."""
    check_tag_columns(config, items.columns)
    columns: dict[str, list] = {ITEM_ID: items[ITEM_ID].to_list()}
    calibration = (np.ones(items.height, dtype=bool) if calibration_ids is None
                   else items[ITEM_ID].is_in(list(calibration_ids)).to_numpy())
    reports = []
    for facet in config.facets:
        prediction = predict_facet(facet, items, image, encode_texts)
        if prediction is None:
            continue
        predicted, confidence = prediction
        report = FacetReport(facet.name, facet.mirrors, 0.0, len(predicted), int(calibration.sum()))
        if facet.mirrors in items.columns:
            correct = np.array([p == t for p, t in zip(predicted, items[facet.mirrors].to_list())], dtype=bool)
            report.threshold, report.precision, report.coverage = abstain_threshold(
                confidence[calibration], correct[calibration], config.target_precision
            )
            report.accuracy = float(correct[calibration].mean()) if calibration.any() else None
        kept = [label if c >= report.threshold else None for label, c in zip(predicted, confidence)]
        report.label_counts = dict(pl.Series(kept, dtype=pl.Utf8).drop_nulls().value_counts().iter_rows())
        columns[facet.name] = kept
        columns[facet.confidence_column] = confidence.tolist()
        reports.append(report)
    return pl.DataFrame(columns), reports


def predict_facet(
    facet: Facet, items: pl.DataFrame, image: np.ndarray, encode_texts: Callable[[Sequence[str]], np.ndarray]
) -> tuple[list[str], np.ndarray] | None:
    """Each item's closest label of `facet` and its confidence (before abstaining); None without labels."""
    labels = facet_labels(facet, items)
    if not labels:
        return None
    prompts = np.asarray(encode_texts([facet.prompt.format(label=label) for label in labels]), dtype=np.float64)
    prompts = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    return closest_labels(np.asarray(image, dtype=np.float64) @ prompts.T, labels)


def closest_labels(cosines: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Each row's closest label (cosines: items x labels) and its margin over the runner-up
    (0 when there is only one label)."""
    best = cosines.argmax(axis=1)
    if cosines.shape[1] < 2:
        return [labels[i] for i in best], np.zeros(cosines.shape[0])
    top_two = np.partition(cosines, -2, axis=1)[:, -2:]
    return [labels[i] for i in best], top_two[:, 1] - top_two[:, 0]


def abstain_threshold(
    confidence: np.ndarray, correct: np.ndarray, target_precision: float
) -> tuple[float, float | None, float]:
    """(threshold, precision, coverage): the lowest confidence threshold at which the tags kept
    (confidence >= threshold) reach `target_precision`, with the most coverage. When none does,
    the threshold is above every confidence (abstain on all), precision None, coverage 0."""
    if confidence.size == 0:
        return float("inf"), None, 0.0
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    precision = hits / np.arange(1, confidence.size + 1)
    sorted_confidence = confidence[order]
    # A cut may only fall between distinct confidences: the last position of each value.
    last_of_value = np.r_[sorted_confidence[1:] != sorted_confidence[:-1], True]
    reaching = np.flatnonzero(last_of_value & (precision >= target_precision))
    if reaching.size == 0:
        return float(np.nextafter(confidence.max(), np.inf)), None, 0.0
    cut = reaching[-1]
    return float(sorted_confidence[cut]), float(precision[cut]), float((cut + 1) / confidence.size)
