"""Train `domain-clip` on the catalog: split by item, train, judge on held-out items, publish.

The base is either the small architecture shipped with the package, trained from scratch (the
offline default), or a registry model being fine-tuned. The judgement (held-out text->image MRR
against a random ranking and the untrained model, zero-shot attribute accuracy against the
majority class) goes on the model card next to the data version and hyperparameters.

A new version is published only when its held-out MRR is not below the registered version's by
more than `publish_margin` (a 2-epoch retrain at 0.176 once replaced an 80-epoch one at 0.923
silently); `force` publishes regardless. A refused version is not registered, and the result says why.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from fashion_search_pipeline import columns as C
from fashion_search_pipeline.evaluation.held_out import DEFAULT_SEED, holdout_split, paired_mrr, random_mrr
from fashion_search_pipeline.evaluation.zero_shot import ZeroShotReport, classify, score_zero_shot
from fashion_search_pipeline.models.checkpoints import SMALL_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import LoadedClip, load_clip, open_clip_name
from fashion_search_pipeline.models.published import PublishedModel, publish_model, read_card
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, ModelSpec
from fashion_search_pipeline.models.training import (
    LABEL_ATTRIBUTES,
    TrainingConfig,
    train_clip,
    training_captions,
)

ZERO_SHOT_ATTRIBUTES = ("article_type", "colour")
DEFAULT_PUBLISH_MARGIN = 0.02  # held-out MRR a new version may lose against the registered one


@dataclass(frozen=True)
class DomainTrainingResult:
    """The published version (None when the gate refused it), the new model's card, and the gate's verdict."""

    published: PublishedModel | None
    card: dict
    gate: str


def publish_verdict(new_mrr: float, current: dict | None, margin: float, force: bool) -> tuple[bool, str]:
    """Whether a version with held-out MRR `new_mrr` may replace the one whose card is `current`, and why."""
    if current is None:
        return True, f"published: no version registered yet (held-out MRR {new_mrr:.4f})"
    old_mrr = float(current.get("held_out", {}).get("text_to_image_mrr", 0.0))
    versus = f"held-out MRR {new_mrr:.4f} vs {old_mrr:.4f} of the registered version {current.get('version')}"
    if force:
        return True, f"published (forced): {versus}"
    if new_mrr < old_mrr - margin:
        return False, (
            f"not published: {versus} is worse by more than the margin {margin}; "
            "the registered version stays (set force: true to publish anyway)"
        )
    return True, f"published: {versus}, within the margin {margin}"


def data_version(catalog: pl.DataFrame) -> str:
    """A fingerprint of the catalog content the model is trained on."""
    keys = catalog.select(C.ITEM_ID, C.CONTENT_HASH).sort(C.ITEM_ID)
    digest = hashlib.sha256()
    for item_id, content in keys.iter_rows():
        digest.update(f"{item_id}\0{content}\n".encode())
    return digest.hexdigest()[:16]


def _base_model(base: ModelSpec | None, seed: int, scratch: Path) -> tuple[LoadedClip, dict, str]:
    """The model to train (a private copy), its open_clip config and a label for the card."""
    if base is None:
        checkpoint = write_random_checkpoint(SMALL_CONFIG, scratch / "init.pt", seed=seed)
        base = ModelSpec("domain-clip-init", str(SMALL_CONFIG), str(checkpoint), device="cpu", precision="fp32")
        label = f"{SMALL_CONFIG.name} from scratch (seed {seed})"
    else:
        label = f"{base.name} ({base.architecture} + {base.pretrained or 'hub weights'}), fine-tuned"
    import open_clip

    loaded = load_clip(dataclasses.replace(base, precision="fp32"))  # training needs fp32 master weights
    config = open_clip.get_model_config(open_clip_name(base))

    return dataclasses.replace(loaded, model=copy.deepcopy(loaded.model)), config, label


def _zero_shot(clip: LoadedClip, image_vectors: np.ndarray, items: pl.DataFrame, attribute: str) -> ZeroShotReport:
    labels = sorted(v for v in items[attribute].drop_nulls().unique().to_list() if v.strip())
    predicted = classify(image_vectors, encode_texts(clip, labels))
    return score_zero_shot(attribute, items[attribute].to_list(), [labels[i] for i in predicted], labels)


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _judge(clip: LoadedClip, held: pl.DataFrame, images: list[bytes], catalog: pl.DataFrame) -> dict:
    image_vectors = encode_images(clip, images)  # once, for the MRR and every zero-shot attribute
    mrr = paired_mrr(encode_texts(clip, held[C.DESCRIPTION].to_list()) @ image_vectors.T)
    figures: dict = {"text_to_image_mrr": round(mrr, 4)}
    for attribute in ZERO_SHOT_ATTRIBUTES:
        if attribute in held.columns and held[attribute].drop_nulls().len() and catalog[attribute].n_unique() > 1:
            report = _zero_shot(clip, image_vectors, held, attribute)
            figures[f"zero_shot_{attribute}"] = {
                "accuracy": _rounded(report.accuracy),
                "macro_f1": _rounded(report.macro_f1),
                "majority_accuracy": _rounded(report.majority_accuracy),
                "labels": len(report.labels),
            }
    return figures


def train_domain_model(
    catalog: pl.DataFrame,
    read_image: Callable[[str], bytes],
    config: TrainingConfig,
    *,
    base: ModelSpec | None = None,
    holdout_fraction: float = 0.1,
    models_root: Path,
    log: Callable[[str], None] = print,
    publish_margin: float = DEFAULT_PUBLISH_MARGIN,
    force: bool = False,
) -> DomainTrainingResult:
    """Train on the catalog's (image, description) pairs, judge on held-out items, publish `domain-clip`
    when it passes the gate (see publish_verdict)."""
    train_ids, held_ids = holdout_split(catalog[C.ITEM_ID].to_list(), holdout_fraction)
    attributes = C.attribute_columns(catalog.columns)
    train = catalog.filter(pl.col(C.ITEM_ID).is_in(train_ids)).sort(C.ITEM_ID)
    held = catalog.filter(pl.col(C.ITEM_ID).is_in(held_ids)).sort(C.ITEM_ID)
    log(f"domain-clip: {train.height} training items, {held.height} held out; reading images")
    train_images = [read_image(uri) for uri in train[C.IMAGE_URI].to_list()]
    held_images = [read_image(uri) for uri in held[C.IMAGE_URI].to_list()]
    pairs = [
        (image, training_captions(row[C.DESCRIPTION], {a: row.get(a) for a in attributes}, config))
        for image, row in zip(train_images, train.iter_rows(named=True))
    ]
    with tempfile.TemporaryDirectory(prefix="domain-clip-") as scratch:
        clip, architecture, base_label = _base_model(base, config.seed, Path(scratch))
    before = _judge(clip, held, held_images, catalog)
    log(f"domain-clip: untrained held-out text->image MRR {before['text_to_image_mrr']}")
    started = time.perf_counter()
    label_columns = [a for a in LABEL_ATTRIBUTES if a in attributes]
    labels = [{a: row.get(a) for a in label_columns} for row in train.iter_rows(named=True)] if label_columns else None
    result = train_clip(clip.model, clip.preprocess, clip.tokenizer, pairs, config, log, labels=labels)
    trained = dataclasses.replace(clip, model=result.model.eval())
    after = _judge(trained, held, held_images, catalog)
    chance = random_mrr(held.height)
    card = {
        "base": base_label,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_version": data_version(catalog),
        "items": {"train": train.height, "held_out": held.height, "holdout_fraction": holdout_fraction,
                  "holdout_seed": DEFAULT_SEED},
        "hyperparameters": dataclasses.asdict(config),
        "training": {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "samples_per_second": round(result.samples_per_second, 1),
            "epochs_completed": len(result.epoch_losses),
            "final_loss": round(result.epoch_losses[-1], 4) if result.epoch_losses else None,
            "stopped_by_time_budget": result.stopped_by_time_budget,
            "device": result.device,
            "precision": result.precision,
            "precision_reason": result.precision_reason,
        },
        "held_out": {
            "text_to_image_mrr": after["text_to_image_mrr"],
            "random_mrr": round(chance, 4),
            "untrained_mrr": before["text_to_image_mrr"],
            "mrr_over_random": round(after["text_to_image_mrr"] / chance, 2),
            **{k: v for k, v in after.items() if k.startswith("zero_shot_")},
        },
    }
    current = read_card(DOMAIN_MODEL, models_root)
    publish, gate = publish_verdict(after["text_to_image_mrr"], current, publish_margin, force)
    log(f"domain-clip: {gate}")
    if not publish:
        return DomainTrainingResult(None, {"name": DOMAIN_MODEL, **card}, gate)
    published = publish_model(DOMAIN_MODEL, trained.model, architecture, card, models_root)
    log(f"domain-clip: published version {published.version} ({card['held_out']})")
    return DomainTrainingResult(published, {"name": DOMAIN_MODEL, "version": published.version, **card}, gate)
