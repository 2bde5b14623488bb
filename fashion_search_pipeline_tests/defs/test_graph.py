"""Materialize the whole asset graph on a temporary Dagster instance, then query the tables."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pytest
from dagster import AssetKey, MultiPartitionKey

from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL, make_defs

SHARED_CATALOG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fashion-catalog"


def _metadata(instance, asset: str, partition: str | None = None) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(asset)) if partition is None else None
    if partition is not None:
        records = instance.fetch_materializations(AssetKey(asset), limit=1000).records
        event = next(r.event_log_entry for r in records if r.partition_key == partition)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _embedding_metadata(instance, modality: str) -> dict:
    key = str(MultiPartitionKey({"model": TINY_MODEL, "modality": modality}))
    return _metadata(instance, "embeddings", key)


def _generated_landing_with_bad_rows(root: Path) -> Path:
    """A generated drop of 12 good items plus one missing image, one corrupt image and one empty description."""
    items = demo_items(variants=1)[:12]
    drop = write_drop(root / "drops" / "gen-001", items)
    (drop / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(drop / "captions.csv", "a", encoding="utf-8") as captions:
        captions.write("gone-1#images/gone.jpg#Nova Men Red Cotton Tshirt#Men#Tshirt#Red\n")
        captions.write("broken-1#images/broken.jpg#Nova Men Blue Cotton Tshirt#Men#Tshirt#Blue\n")
        captions.write(f"blank-1#images/{items[0].item_id}.jpg#   #Men#Tshirt#Red\n")
    return root


def test_generated_drop_rejects_bad_rows_and_embeds_the_good_ones(tmp_path, tiny_registry, instance):
    landing = _generated_landing_with_bad_rows(tmp_path / "landing")
    defs = make_defs(landing, tmp_path, tiny_registry)

    outcome = materialize_graph(defs, instance, ["gen-001"], [TINY_MODEL], log=lambda _: None)

    assert outcome.ok, outcome.failures
    cleaned = _metadata(instance, "cleaned_captions", "gen-001")
    assert cleaned["accepted"] == 12
    assert cleaned["rejected"] == 3
    rejected = {reason: n for reason, n in cleaned["rejects_by_reason"].items() if n}
    assert rejected == {"missing_image": 1, "undecodable_image": 1, "empty_description": 1}
    manifest = _metadata(instance, "image_manifest", "gen-001")
    assert manifest["undecodable"] == 1
    for modality in ("image", "text"):
        meta = _embedding_metadata(instance, modality)
        assert (meta["embedded"], meta["dagster/row_count"]) == (12, 12)

    db = lancedb.connect(str(tmp_path / "lancedb"))
    text_rows = db.open_table(f"{TINY_MODEL}__text").to_polars().collect()
    assert sorted(text_rows["item_id"]) == sorted(item.item_id for item in demo_items(variants=1)[:12])
    assert set(text_rows["colour"]) <= {"Red", "Blue", "Green", "Yellow", "Black", "White", "Pink"}

    search = CatalogSearch(str(tmp_path / "lancedb"), registry=tiny_registry)
    target = demo_items(variants=1)[3]
    assert search.text(target.description, model=TINY_MODEL, k=5, fusion="text")["item_id"][0] == target.item_id
    fused = search.text(target.description, model=TINY_MODEL, k=5)
    assert fused.height == 5 and fused["item_id"].n_unique() == 5
    assert {"item_id", "image_uri", "description", "colour", "score", "matched"} <= set(fused.columns)


def test_rematerializing_embeds_nothing_and_keeps_row_counts(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    write_drop(landing / "drops" / "gen-001", demo_items(variants=1)[:10])
    defs = make_defs(landing, tmp_path, tiny_registry)
    assert materialize_graph(defs, instance, ["gen-001"], [TINY_MODEL], log=lambda _: None).ok

    again = materialize_graph(defs, instance, ["gen-001"], [TINY_MODEL], log=lambda _: None)

    assert again.ok, again.failures
    for modality in ("image", "text"):
        meta = _embedding_metadata(instance, modality)
        assert meta["embedded"] == 0
        assert meta["skipped_up_to_date"] == 10
        assert meta["dagster/row_count"] == 10


def test_later_drop_replaces_item_and_only_changed_items_are_embedded(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    items = demo_items(variants=1)[:10]
    write_drop(landing / "drops" / "d1", items)
    defs = make_defs(landing, tmp_path, tiny_registry)
    assert materialize_graph(defs, instance, ["d1"], [TINY_MODEL], log=lambda _: None).ok

    changed = items[0].__class__(items[0].item_id, "Mira Women Green Wrap Dress", "Women", "Dress", "Green")
    new = demo_items(variants=2)[-1]
    write_drop(landing / "drops" / "d2", [changed, new], seed=99)
    assert materialize_graph(defs, instance, ["d1", "d2"], [TINY_MODEL], log=lambda _: None).ok

    meta = _embedding_metadata(instance, "text")
    assert (meta["embedded"], meta["dagster/row_count"]) == (2, 11)
    rows = lancedb.connect(str(tmp_path / "lancedb")).open_table(f"{TINY_MODEL}__text").to_polars().collect()
    replaced = rows.filter(rows["item_id"] == changed.item_id)
    assert replaced["description"].to_list() == ["Mira Women Green Wrap Dress"]
    assert replaced["drop_id"].to_list() == ["d2"]


@pytest.mark.skipif(not SHARED_CATALOG.exists(), reason=f"real catalog not found at {SHARED_CATALOG}")
def test_first_real_drop_materializes_and_is_searchable(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    (landing / "drops").mkdir(parents=True)
    (landing / "drops" / "2026-11-01").symlink_to(SHARED_CATALOG / "drops" / "2026-11-01")
    defs = make_defs(landing, tmp_path, tiny_registry)

    outcome = materialize_graph(defs, instance, ["2026-11-01"], [TINY_MODEL], log=lambda _: None)

    assert outcome.ok, outcome.failures
    cleaned = _metadata(instance, "cleaned_captions", "2026-11-01")
    rows = sum(1 for _ in open(SHARED_CATALOG / "drops" / "2026-11-01" / "captions.csv", encoding="utf-8")) - 1
    assert (cleaned["accepted"], cleaned["rejected"]) == (rows, 0)
    assert _embedding_metadata(instance, "image")["dagster/row_count"] == rows

    search = CatalogSearch(str(tmp_path / "lancedb"), registry=tiny_registry)
    women = search.text("black jacket", model=TINY_MODEL, k=5, where="gender = 'Women'")
    assert women.height == 5
    assert set(women["gender"]) == {"Women"}
    image = next((SHARED_CATALOG / "drops" / "2026-11-01" / "images").glob("*.jpg"))
    by_image = search.image(image, model=TINY_MODEL, k=3, fusion="image")
    assert by_image["item_id"][0] == image.stem
