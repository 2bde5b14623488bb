"""Whole evaluations on real LanceDB tables and image files, embedded by a tiny random-weight CLIP
loaded from its checkpoint; figures re-computed independently from the tables themselves."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fashion_search_pipeline.columns import CONTENT_HASH, DESCRIPTION, DROP_ID, IMAGE_URI, ITEM_ID
from fashion_search_pipeline.demo_catalog import demo_items, render
from fashion_search_pipeline.embedding_sync import sync_embeddings
from fashion_search_pipeline.evaluation.held_out import HELD_OUT, IN_SAMPLE, holdout_split
from fashion_search_pipeline.evaluation.keyword_scores import keyword_score_matrix
from fashion_search_pipeline.evaluation.recommendation import fusion_choices
from fashion_search_pipeline.evaluation.report import write_reports
from fashion_search_pipeline.evaluation.retrieval import IMAGE_SEARCH, TEXT_SEARCH, TEXT_TO_IMAGE
from fashion_search_pipeline.evaluation.shopper_queries import SHOPPER_SEARCH
from fashion_search_pipeline.evaluation.suite import evaluate_captions_folder, evaluate_catalog
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.loading import load_clip
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.store.fusion import KEYWORD_STRATEGIES
from fashion_search_pipeline.store.indexes import ensure_indexes
from fashion_search_pipeline.store.tables import connect, delete_items, table_name

MODEL = "tiny"


@pytest.fixture(scope="module")
def clip(tiny_checkpoint):
    spec = ModelSpec(MODEL, str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32", batch_size=16)
    return load_clip(spec)


def write_images(folder: Path, items) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    uris = {}
    for item in items:
        path = folder / f"{item.item_id}.jpg"
        render(item.article_type, item.colour, rng).save(path, format="JPEG")
        uris[item.item_id] = str(path)
    return uris


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, clip):
    """42 demo items embedded into tiny__image and tiny__text by the real embedding sync."""
    root = tmp_path_factory.mktemp("catalog")
    items = demo_items(variants=1)
    uris = write_images(root / "images", items)
    frame = pl.DataFrame(
        {
            ITEM_ID: [i.item_id for i in items],
            DROP_ID: ["d1"] * len(items),
            IMAGE_URI: [uris[i.item_id] for i in items],
            DESCRIPTION: [i.description for i in items],
            CONTENT_HASH: [f"h-{i.item_id}" for i in items],
            "gender": [i.gender for i in items],
            "article_type": [i.article_type for i in items],
            "colour": [i.colour for i in items],
        }
    )
    db = connect(str(root / "lancedb"))
    for modality in ("image", "text"):
        sync_embeddings(frame, db, clip, modality, read_image=lambda uri: Path(uri).read_bytes())
        ensure_indexes(db.open_table(table_name(MODEL, modality)))  # the keyword leg's full-text index
    return {"db": db, "frame": frame, "root": root}


def test_catalog_evaluation_agrees_with_a_brute_force_computation_from_the_tables(catalog, clip):
    db = catalog["db"]
    captions = b"image,caption\nimages/cap-red-1.jpg,a red cap\nimages/nope.jpg,not in the catalog\n"
    evaluation = evaluate_catalog(
        db,
        [MODEL, "absent"],
        lambda name: clip,
        catalog_ids=catalog["frame"][ITEM_ID].to_list() + ["never-embedded"],
        captions={"extra.csv": captions},
    )

    tasks = {(r.task, r.strategy) for r in evaluation.results}
    assert (TEXT_TO_IMAGE, None) in tasks and (TEXT_SEARCH, "rrf") in tasks and (IMAGE_SEARCH, "raw") in tasks
    assert ("captions:extra.csv", "weighted") in tasks
    assert evaluation.label_columns == ["gender", "colour", "article_type"]
    assert [r.attribute for r in evaluation.zero_shot[MODEL]] == ["article_type", "colour", "gender"]
    assert any("'absent' has no table 'absent__image'" in note for note in evaluation.notes)
    assert any("1 of 43 catalog items lack vectors" in note for note in evaluation.notes)
    assert any("extra.csv: 1 captions skipped {'unknown_item': 1}, 1 evaluated" in note for note in evaluation.notes)

    # Independently: read both tables, rank every image for every description by cosine.
    text = db.open_table(table_name(MODEL, "text")).to_polars().collect().sort(ITEM_ID)
    image = db.open_table(table_name(MODEL, "image")).to_polars().collect().sort(ITEM_ID)
    t = np.stack(text["vector"].to_list()).astype(np.float64)
    v = np.stack(image["vector"].to_list()).astype(np.float64)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    scores = t @ v.T
    own_rank = [1 + int(np.sum(row > row[i]) + np.sum(row[:i] == row[i])) for i, row in enumerate(scores)]
    forward = next(r for r in evaluation.results if r.task == TEXT_TO_IMAGE)
    assert [int(r[0]) for r in forward.ranks] == own_rank  # demo descriptions are unique here
    assert forward.metrics.mrr == pytest.approx(np.mean([1 / r for r in own_rank]), rel=1e-9)
    assert forward.metrics.recall[10] == pytest.approx(np.mean([r <= 10 for r in own_rank]))
    assert forward.metrics.median_rank == pytest.approx(np.median(own_rank))


def test_a_model_that_cannot_be_loaded_is_evaluated_on_its_tables_only(catalog):
    evaluation = evaluate_catalog(catalog["db"], [MODEL], lambda name: None)
    assert {r.task for r in evaluation.results} == {"text_to_image", "image_to_text", "image_to_image", "image_search"}
    assert evaluation.zero_shot == {}
    assert any("not loadable here, so text_search" in note for note in evaluation.notes)


def test_tables_of_another_model_version_are_not_mixed_with_new_query_vectors(catalog, clip, tmp_path):
    other = write_random_checkpoint(TINY_CONFIG, tmp_path / "other.pt", seed=1)
    retrained = load_clip(ModelSpec(MODEL, str(TINY_CONFIG), pretrained=str(other), precision="fp32"))
    evaluation = evaluate_catalog(catalog["db"], [MODEL], lambda name: retrained)
    assert not any(r.task == TEXT_SEARCH for r in evaluation.results)
    assert any(f"the loaded model is {retrained.version}" in note for note in evaluation.notes)


def test_empty_tables_give_a_clear_message_and_reports_without_nan(tmp_path, clip):
    items = demo_items(variants=1)[:3]
    uris = write_images(tmp_path / "images", items)
    frame = pl.DataFrame(
        {ITEM_ID: [i.item_id for i in items], DROP_ID: ["d"] * 3, IMAGE_URI: [uris[i.item_id] for i in items],
         DESCRIPTION: [i.description for i in items], CONTENT_HASH: ["h1", "h2", "h3"], "colour": ["Red"] * 3}
    )
    db = connect(str(tmp_path / "lancedb"))
    for modality in ("image", "text"):
        sync_embeddings(frame, db, clip, modality, read_image=lambda uri: Path(uri).read_bytes())
        delete_items(db, table_name(MODEL, modality), frame[ITEM_ID].to_list())

    evaluation = evaluate_catalog(db, [MODEL], lambda name: clip)
    files = write_reports(evaluation, tmp_path / "reports", lambda uri: Path(uri).read_bytes())

    assert evaluation.results == []
    assert "**Nothing was evaluated.** model tiny: its tables hold no items, nothing to evaluate" in files.markdown
    assert "nan" not in files.metrics.read_text().lower()


def write_captions_folder(root: Path) -> Path:
    items = demo_items(variants=1)[:8]
    write_images(root / "images", items)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "caption"])
    for item in items:
        writer.writerow([f"{item.item_id}.jpg", item.description])
        writer.writerow([f"{item.item_id}.jpg", f"a {item.colour.lower()} {item.article_type.lower()}"])
    writer.writerow(["missing.jpg", "an image that is not there"])
    (root / "captions.csv").write_text(text.getvalue(), encoding="utf-8")
    return root


def test_captions_folder_is_evaluated_in_memory(tmp_path, clip):
    folder = write_captions_folder(tmp_path / "captioned")
    evaluation = evaluate_captions_folder(folder, {MODEL: clip})
    forward, backward = evaluation.results
    assert (forward.task, forward.metrics.queries, forward.metrics.skipped) == ("text_to_image", 16, 1)
    assert (backward.task, backward.metrics.queries) == ("image_to_text", 8)
    assert all(ranks.size == 2 for ranks in backward.ranks)
    assert "1 captions skipped {'unknown_item': 1}" in evaluation.notes[0]
    files = write_reports(evaluation, tmp_path / "reports", lambda uri: Path(uri).read_bytes())
    assert "**Recommendation:** Best model: `tiny`" in files.markdown
    assert "each caption as a query; relevant: its image." in files.markdown


def test_a_folder_without_captions_is_rejected(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match="captions.csv is missing"):
        evaluate_captions_folder(tmp_path, {MODEL: clip})


def only_items(frame: pl.DataFrame, item_ids, root: Path, clip) -> object:
    """A LanceDB holding only `item_ids`, embedded by the real sync: the catalog a subset run stands for."""
    db = connect(str(root / "lancedb"))
    part = frame.filter(pl.col(ITEM_ID).is_in(list(item_ids)))
    for modality in ("image", "text"):
        sync_embeddings(part, db, clip, modality, read_image=lambda uri: Path(uri).read_bytes())
        ensure_indexes(db.open_table(table_name(MODEL, modality)))
    return db


def test_a_trained_model_is_reported_on_its_held_out_and_training_items_apart(catalog, clip, tmp_path):
    ids = catalog["frame"][ITEM_ID].to_list()
    card = {"version": clip.version, "items": {"holdout_fraction": 0.3, "holdout_seed": "test"}}
    train, held = holdout_split(ids, 0.3, seed="test")
    evaluation = evaluate_catalog(catalog["db"], [MODEL], lambda name: clip, training_cards={MODEL: card})

    by_subset = {subset: [r for r in evaluation.results if r.subset == subset] for subset in (None, HELD_OUT, IN_SAMPLE)}
    keys = {subset: {(r.task, r.strategy) for r in results} for subset, results in by_subset.items()}
    assert keys[None] == keys[HELD_OUT] == keys[IN_SAMPLE] and (SHOPPER_SEARCH, "hybrid") in keys[None]
    assert any(f"{len(held)} items its training held out" in note for note in evaluation.notes)
    in_sample = next(set(r.queries) for r in by_subset[IN_SAMPLE] if r.task == IMAGE_SEARCH)
    assert len(in_sample) == len(held) and in_sample < set(train)  # as many training items as held out
    for subset, members in ((HELD_OUT, set(held)), (IN_SAMPLE, set(train))):
        for result in by_subset[subset]:
            assert all(set(top) <= members for top in result.top), (subset, result.task, result.strategy)
            if result.query_kind == "image":
                assert set(result.queries) <= members

    # The held-out run is the evaluation of a catalog holding only the held-out items (vector legs; BM25
    # keeps the whole table's statistics, so the keyword strategies are only checked to stay inside it).
    alone = evaluate_catalog(only_items(catalog["frame"], held, tmp_path, clip), [MODEL], lambda name: clip)
    expected = {(r.task, r.strategy): r for r in alone.results}
    compared = 0
    for result in by_subset[HELD_OUT]:
        if result.strategy in KEYWORD_STRATEGIES:
            continue
        twin = expected.get((result.task, result.strategy))
        if twin is None:  # a query kind the held-out items alone would not generate
            assert result.task.startswith(f"{SHOPPER_SEARCH}/"), result.task
            continue
        ours = dict(zip(result.queries, (r.tolist() for r in result.ranks)))
        theirs = {query: r.tolist() for query, r in zip(twin.queries, twin.ranks) if r.size}
        if result.query_kind == "image" or result.task == TEXT_TO_IMAGE:
            assert ours == {query: r.tolist() for query, r in zip(twin.queries, twin.ranks)}, result.task
        # text queries are drawn from every item, so compare the queries both runs asked
        common = [q for q in theirs if q in ours]
        assert all(ours[q] == theirs[q] for q in common), result.task
        compared += len(common)
    assert compared > 100
    keyword = next(r for r in by_subset[HELD_OUT] if (r.task, r.strategy) == (SHOPPER_SEARCH, "keyword"))
    assert any(top for top in keyword.top)  # the keyword leg found held-out items

    # The fusion is still chosen on all items; the report says which rows are held-out and in-sample.
    plain = evaluate_catalog(catalog["db"], [MODEL], lambda name: clip)
    assert fusion_choices(evaluation.results) == fusion_choices(plain.results)
    files = write_reports(evaluation, tmp_path / "reports", lambda uri: Path(uri).read_bytes())
    assert "## Held-out vs in-sample items (trained models)" in files.markdown
    assert "| model | task | fusion | MRR all | MRR held-out | MRR in-sample |" in files.markdown
    rows = json.loads(files.metrics.read_text())["metrics"]
    assert {row["subset"] for row in rows} == {None, HELD_OUT, IN_SAMPLE}
    held_row = next(r for r in rows if (r["task"], r["strategy"], r["subset"]) == (TEXT_TO_IMAGE, None, HELD_OUT))
    assert held_row["queries"] == len(held)
    per_query = pl.read_parquet(files.per_query)
    assert per_query.filter(pl.col("subset") == HELD_OUT).height > 0


def test_a_card_of_another_version_or_without_a_split_reports_all_items_together(catalog, clip):
    for card, says in (
        ({"version": "0123456789abcdef", "items": {"holdout_fraction": 0.3}}, "its card is of version 0123456789abcdef"),
        ({"version": clip.version, "items": {}}, "records no usable held-out split"),
    ):
        evaluation = evaluate_catalog(catalog["db"], [MODEL], lambda name: clip, training_cards={MODEL: card})
        assert {r.subset for r in evaluation.results} == {None}
        assert any(says in note for note in evaluation.notes)


def test_the_keyword_leg_of_a_subset_keeps_the_best_hits_among_its_items(catalog):
    table = catalog["db"].open_table(table_name(MODEL, "text"))
    ids = catalog["frame"][ITEM_ID].to_list()
    queries = ["cotton tshirt", "red cap", "!!!"]
    everything = keyword_score_matrix(table, queries, ids, depth=None)
    part = ids[::3]
    restricted = keyword_score_matrix(table, queries, part, depth=2)
    columns = [ids.index(i) for i in part]
    for row in range(len(queries)):
        found = [(-everything[row, j], part[n]) for n, j in enumerate(columns) if np.isfinite(everything[row, j])]
        kept = {item for _, item in sorted(found)[:2]}
        assert {part[n] for n in np.flatnonzero(np.isfinite(restricted[row]))} == kept
    assert np.isfinite(restricted[0]).sum() == 2 and not np.isfinite(restricted[2]).any()
