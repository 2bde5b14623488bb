"""Whole evaluations: every model of a catalog's LanceDB tables, or a folder of captioned images.

Both return an Evaluation that evaluation.report turns into tables, plots and files.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, IMAGE_URI, ITEM_ID
from fashion_search_pipeline.evaluation.attributes import DEFAULT_ATTRIBUTES, classify_attributes
from fashion_search_pipeline.evaluation.evaluation_sets import captions_file_set
from fashion_search_pipeline.evaluation.held_out import HELD_OUT, IN_SAMPLE, card_subsets
from fashion_search_pipeline.evaluation.keyword_scores import keyword_score_matrix
from fashion_search_pipeline.evaluation.retrieval import (
    DEFAULT_LABEL_COLUMNS,
    FUSION_DEPTH,
    TaskResult,
    evaluate_caption_pairs,
    evaluate_model,
)
from fashion_search_pipeline.evaluation.shopper_queries import read_judged_queries
from fashion_search_pipeline.evaluation.vectors import ModelVectors, read_model_vectors
from fashion_search_pipeline.evaluation.zero_shot import ZeroShotReport
from fashion_search_pipeline.models.encoders import encode_images, encode_texts
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.store.tables import ModelTablesMissingError, open_existing_table, table_name

if TYPE_CHECKING:
    import lancedb

CATALOG_KIND = "catalog"
CAPTIONS_KIND = "captions"
CAPTIONS_FILE = "captions.csv"
IMAGES_FOLDER = "images"


@dataclass
class Evaluation:
    """Everything one evaluation measured, for reports.

    kind: CATALOG_KIND (a catalog's tables) or CAPTIONS_KIND (captioned images).
    items: per model, the candidate items (item_id, image_uri, description) in
    index order. label_columns: the labels that define "same product kind" for
    image_to_image and the search tasks (empty when none were used).
    """

    dataset: str
    kind: str
    results: list[TaskResult] = field(default_factory=list)
    zero_shot: dict[str, list[ZeroShotReport]] = field(default_factory=dict)
    items: dict[str, pl.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    label_columns: list[str] = field(default_factory=list)
    depth: int | None = FUSION_DEPTH


def evaluate_catalog(
    db: lancedb.DBConnection,
    model_names: Sequence[str],
    load: Callable[[str], LoadedClip | None],
    *,
    dataset: str = "catalog",
    catalog_ids: Collection[str] | None = None,
    captions: Mapping[str, bytes] | None = None,
    label_columns: Sequence[str] = DEFAULT_LABEL_COLUMNS,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    depth: int | None = FUSION_DEPTH,
    max_queries: int | None = None,
    unavailable: Mapping[str, str] | None = None,
    judged_queries: bytes | None = None,
    training_cards: Mapping[str, Mapping] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Evaluation:
    """Evaluate the <model>__image and <model>__text tables of each named model.

    Text-query tasks include the keyword leg (BM25 over the model's text table) and the
    shopper-query task; `judged_queries` is a shop's own query file (shopper_queries.read_judged_queries).

    `unavailable` maps models that cannot be loaded here to the reason (and fix): they are
    noted as "unavailable: <reason>" rather than as models whose embeddings are missing.

    `load` returns a model's CLIP, or None when it cannot be loaded here (then only
    the tasks that need no new text embedding run); it is called only for models
    that have tables. `catalog_ids` (the current catalog) adds a note for each model
    whose tables lack some of its items.
    `captions` maps evaluation-file names to their bytes (image,caption CSV);
    captions of images that are not catalog items are skipped and counted.
    `training_cards` maps trained models (domain-clip) to their model card: every task is then
    reported again on the items its training held out and on as many it trained on
    (TaskResult.subset; held_out.card_subsets), when the card is of the version the tables hold.
    """
    evaluation = Evaluation(dataset=dataset, kind=CATALOG_KIND, depth=depth)
    if not model_names:
        evaluation.notes.append("no model is registered: nothing to evaluate")
    for name in model_names:
        try:
            vectors = read_model_vectors(db, name)
        except ModelTablesMissingError as error:
            reason = (unavailable or {}).get(name)
            evaluation.notes.append(f"model {name} unavailable: {reason}" if reason else str(error))
            continue
        clip = load(name)
        log(f"evaluating {name}: {len(vectors.item_ids)} items")
        if catalog_ids is not None:
            missing = len(set(catalog_ids) - set(vectors.item_ids))
            if missing:
                evaluation.notes.append(
                    f"model {name}: {missing} of {len(catalog_ids)} catalog items lack vectors in its tables"
                )
        if vectors.unpaired:
            evaluation.notes.append(f"model {name}: {vectors.unpaired} items are in only one of its tables, left out")
        encode = None
        if clip is not None and vectors.versions <= {clip.version}:
            encode = partial(encode_texts, clip)
        elif clip is not None:
            evaluation.notes.append(
                f"model {name}: its tables hold vectors of version(s) {sorted(vectors.versions)} but the loaded "
                f"model is {clip.version}; re-materialize its embeddings to evaluate new text queries"
            )
        caption_sets = {
            file_name: captions_file_set(data, vectors.item_ids, name=file_name)
            for file_name, data in (captions or {}).items()
        }
        for file_name, caption_set in caption_sets.items():
            if caption_set.skipped:
                evaluation.notes.append(
                    f"model {name}: evaluation file {file_name}: {caption_set.skipped} captions skipped "
                    f"{dict(sorted(caption_set.skipped_reasons.items()))}, {len(caption_set)} evaluated"
                )
        subsets = _training_subsets(name, (training_cards or {}).get(name), vectors, evaluation.notes)
        text_table = open_existing_table(db, table_name(name, "text"))
        results, notes = evaluate_model(
            vectors,
            encode_text=encode,
            caption_sets=caption_sets,
            label_columns=label_columns,
            depth=depth,
            max_queries=max_queries,
            keyword_scores=partial(keyword_score_matrix, text_table, depth=depth),
            judged=None if judged_queries is None else read_judged_queries(judged_queries, vectors.items),
            subsets=subsets,
        )
        evaluation.results += results
        evaluation.notes += notes
        present = [column for column in label_columns if column in vectors.items.columns]
        evaluation.label_columns = evaluation.label_columns or present
        evaluation.items[name] = vectors.items.select(ITEM_ID, IMAGE_URI, DESCRIPTION)
        if encode is not None and vectors.item_ids:
            reports, notes = classify_attributes(vectors.image, vectors.items, encode, attributes)
            evaluation.zero_shot[name] = reports
            evaluation.notes += [f"model {name}: {note}" for note in notes]
    return evaluation


def _training_subsets(name: str, card: Mapping | None, vectors: ModelVectors, notes: list[str]) -> dict | None:
    """A trained model's held-out and training items among its table rows (None without a usable card)."""
    if card is None:
        return None
    version = card.get("version")
    if version is not None and vectors.versions and version not in vectors.versions:
        notes.append(
            f"model {name}: its card is of version {version} but its tables hold {sorted(vectors.versions)}, "
            "so held-out and in-sample items are not reported apart"
        )
        return None
    subsets = card_subsets(card, vectors.item_ids)
    if subsets is None:
        notes.append(f"model {name}: its card records no usable held-out split, so all items are reported together")
        return None
    notes.append(
        f"model {name}: also reported on the {len(subsets[HELD_OUT])} items its training held out "
        f"({HELD_OUT}) and on {len(subsets[IN_SAMPLE])} of those it trained on ({IN_SAMPLE}), each as its own catalog"
    )
    return subsets


def evaluate_captions_folder(
    folder: str | Path,
    models: Mapping[str, LoadedClip],
    *,
    max_queries: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Evaluation:
    """Evaluate images with several captions each, embedded in memory (no catalog, no tables).

    The folder holds captions.csv (image,caption rows) and images/; an image's id is
    its file stem. Tasks: text_to_image and image_to_text.
    """
    folder = Path(folder)
    captions_path, images_path = folder / CAPTIONS_FILE, folder / IMAGES_FOLDER
    for required in (captions_path, images_path):
        if not required.exists():
            raise FileNotFoundError(f"{folder} is not a captions dataset: {required} is missing")
    images = sorted(path for path in images_path.iterdir() if path.is_file())
    image_ids = [path.stem for path in images]
    captions = captions_file_set(captions_path.read_bytes(), image_ids, name=captions_path.name)
    evaluation = Evaluation(dataset=folder.name, kind=CAPTIONS_KIND, depth=None)
    if captions.skipped:
        evaluation.notes.append(
            f"{captions_path}: {captions.skipped} captions skipped {dict(sorted(captions.skipped_reasons.items()))}"
        )
    items = pl.DataFrame(
        {ITEM_ID: image_ids, IMAGE_URI: [str(path) for path in images], DESCRIPTION: [None] * len(images)},
        schema={ITEM_ID: pl.Utf8, IMAGE_URI: pl.Utf8, DESCRIPTION: pl.Utf8},
    )
    for name, clip in models.items():
        log(f"evaluating {name} on {folder.name}: {len(images)} images, {len(captions)} captions")
        image_vectors = encode_images(clip, (path.read_bytes() for path in images))
        caption_vectors = encode_texts(clip, captions.queries)
        evaluation.results += evaluate_caption_pairs(
            name, image_ids, image_vectors, captions, caption_vectors, max_queries=max_queries
        )
        evaluation.items[name] = items
    if not models:
        evaluation.notes.append("no model could be loaded: nothing to evaluate")
    return evaluation
